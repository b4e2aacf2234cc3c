import pytest
import torch
import torch.nn.functional as F

from kdsearch.data.augment import MEAN, STD, Views, augmented_views, view_params


def images(n=64, seed=0, h=32, w=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)
    return x.permute(0, 3, 1, 2)  # channels_last, as the engine keeps them


def reference_view(img, dy, dx, flip, pad=4, mean=MEAN, std=STD):
    """One image the slow, obvious way: zero-pad by `pad`, crop HxW at (dy, dx), then flip, then normalise."""
    _, h, w = img.shape
    padded = F.pad(img.float(), (pad, pad, pad, pad))
    out = padded[:, dy:dy + h, dx:dx + w]
    if flip:
        out = out.flip(-1)
    return (out - torch.tensor(mean).view(3, 1, 1) * 255) / (torch.tensor(std).view(3, 1, 1) * 255)


@pytest.mark.parametrize("views,h,w", [
    (Views(3), 32, 32),  # the notebook's: padding 4, flips, CIFAR-10's constants
    (Views(3, padding=3, flip=False, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)), 24, 20),  # another size, no flip
    (Views(3, padding=0), 16, 16),  # no crop at all
])
def test_batched_views_equal_the_per_image_reference(views, h, w):
    x = images(h=h, w=w)
    idx = torch.arange(len(x))
    got = augmented_views(x, idx, views, epoch=5)
    assert got.shape == (64, 3, h, w) and got.is_contiguous(memory_format=torch.channels_last)
    dy, dx, flip = view_params(views, 5, idx)
    assert int(dy.max()) <= 2 * views.padding and int(dx.max()) <= 2 * views.padding
    assert views.flip or not flip.any()
    for i in range(len(x)):
        torch.testing.assert_close(got[i], reference_view(x[i], int(dy[i]), int(dx[i]), bool(flip[i]), views.padding,
                                                          views.mean, views.std))


def test_each_image_gets_its_own_offset_and_flip():
    dy, dx, flip = view_params(Views(0), 0, torch.arange(1000))
    assert dy.min() == 0 and dy.max() == 8 and dx.min() == 0 and dx.max() == 8
    assert len({(a, b) for a, b in zip(dy.tolist(), dx.tolist())}) == 81  # every offset occurs
    assert 400 < int(flip.sum()) < 600
    assert not torch.equal(dy[:256], dy[:1].expand(256))


def test_the_view_is_a_pure_function_of_seed_epoch_and_index():
    x = images()
    alone = augmented_views(x, torch.tensor([7]), Views(1), epoch=2)[0]
    in_batch = augmented_views(x, torch.tensor([30, 7, 3]), Views(1), epoch=2)[1]
    torch.testing.assert_close(alone, in_batch)
    again = augmented_views(x, torch.tensor([7]), Views(1), epoch=2)[0]
    torch.testing.assert_close(alone, again)
    p = torch.arange(200)
    assert any(not torch.equal(a, b) for a, b in zip(view_params(Views(1), 2, p), view_params(Views(1), 3, p)))
    assert any(not torch.equal(a, b) for a, b in zip(view_params(Views(1), 2, p), view_params(Views(2), 2, p)))


def test_everything_that_makes_a_view_is_in_its_key():
    base = Views(1)
    others = [Views(2), Views(1, padding=3), Views(1, flip=False), Views(1, mean=(0.5, 0.4822, 0.4465)),
              Views(1, std=(0.2023, 0.1994, 0.3))]
    assert len({base.key, *(v.key for v in others)}) == 1 + len(others)
    assert Views(1).key == base.key
