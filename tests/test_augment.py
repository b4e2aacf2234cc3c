import torch
import torch.nn.functional as F

from kdsearch.augment import MEAN, STD, augmented_views, view_params


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    return x.permute(0, 3, 1, 2)  # channels_last, as the engine keeps them


def reference_view(img, dy, dx, flip):
    """One image the slow, obvious way: zero-pad by 4, crop 32x32 at (dy, dx), then flip."""
    padded = F.pad(img.float(), (4, 4, 4, 4))
    out = padded[:, dy:dy + 32, dx:dx + 32]
    if flip:
        out = out.flip(-1)
    mean = torch.tensor(MEAN).view(3, 1, 1) * 255
    std = torch.tensor(STD).view(3, 1, 1) * 255
    return (out - mean) / std


def test_batched_views_equal_the_per_image_reference():
    x = images()
    idx = torch.arange(len(x))
    got = augmented_views(x, idx, seed=3, epoch=5)
    assert got.shape == (64, 3, 32, 32) and got.is_contiguous(memory_format=torch.channels_last)
    dy, dx, flip = view_params(3, 5, idx)
    for i in range(len(x)):
        torch.testing.assert_close(got[i], reference_view(x[i], int(dy[i]), int(dx[i]), bool(flip[i])))


def test_each_image_gets_its_own_offset_and_flip():
    dy, dx, flip = view_params(0, 0, torch.arange(1000))
    assert dy.min() == 0 and dy.max() == 8 and dx.min() == 0 and dx.max() == 8
    assert len({(a, b) for a, b in zip(dy.tolist(), dx.tolist())}) == 81  # every offset occurs
    assert 400 < int(flip.sum()) < 600
    assert not torch.equal(dy[:256], dy[:1].expand(256))


def test_the_view_is_a_pure_function_of_seed_epoch_and_index():
    x = images()
    alone = augmented_views(x, torch.tensor([7]), seed=1, epoch=2)[0]
    in_batch = augmented_views(x, torch.tensor([30, 7, 3]), seed=1, epoch=2)[1]
    torch.testing.assert_close(alone, in_batch)
    again = augmented_views(x, torch.tensor([7]), seed=1, epoch=2)[0]
    torch.testing.assert_close(alone, again)
    p = torch.arange(200)
    assert any(not torch.equal(a, b) for a, b in zip(view_params(1, 2, p), view_params(1, 3, p)))  # epochs differ
    assert any(not torch.equal(a, b) for a, b in zip(view_params(1, 2, p), view_params(2, 2, p)))  # seeds differ
