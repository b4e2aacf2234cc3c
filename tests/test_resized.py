"""Views for large images: RandomResizedCrop boxes resized on the device in batches (data/resized.py), images held at
a stored size larger than the views (data.stored_size), evaluation on the centre crop. Checked against a
per-image reference (the box cropped, torch's interpolate, the flip) on real images."""
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BASE

from kdsearch.data.augment import Mix, Views, augmented_views, normalize, plain_views, view_params
from kdsearch.data.dataset import load_arrays
from kdsearch.data.resized import resized_params

RESIZED = Views(3, crop="resized", size=(24, 24))


@pytest.fixture(scope="module")
def images(tiny_archive):
    """40 real 32x32 images, uint8 (N, 3, H, W) in channels_last as the engine holds them."""
    x = torch.from_numpy(load_arrays("auto", tiny_archive).train_x[:40]).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


def reference(image, box, flip, size, views):
    """One view the slow way: the box cropped from the image, resized by torch's interpolate, flipped."""
    top, left, h, w = box
    crop = image[None, :, top:top + h, left:left + w].float()
    out = F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=False)
    return normalize(out.flip(3) if flip else out, views)[0]


@pytest.mark.parametrize("epoch", [0, 7])
def test_each_resized_view_is_its_box_cropped_resized_and_flipped(images, epoch):
    idx = torch.arange(len(images))
    batch = augmented_views(images, idx, RESIZED, epoch)
    assert batch.shape == (40, 3, 24, 24) and batch.is_contiguous(memory_format=torch.channels_last)
    top, left, h, w, flip = resized_params(RESIZED, epoch, idx, (32, 32))
    for i in range(len(images)):
        want = reference(images[i], (top[i], left[i], h[i], w[i]), bool(flip[i]), (24, 24), RESIZED)
        torch.testing.assert_close(batch[i], want, atol=1e-4, rtol=0)
    assert 0 < int(flip.sum()) < 40  # both flipped and unflipped views occur


def test_the_boxes_follow_torchvisions_rule(images):
    idx = torch.arange(4000)
    top, left, h, w, _ = resized_params(RESIZED, 1, idx, (32, 40))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 40).all()
    area, ratio = (h * w).double() / (32 * 40), w.double() / h.double()
    # within the scale and ratio ranges, up to the rounding of a side to whole pixels
    assert area.min() > 0.08 * 0.7 and area.max() <= 1.0 and ratio.min() > 0.75 * 0.8 and ratio.max() < 4 / 3 * 1.25
    # the same distribution as torchvision's own RandomResizedCrop.get_params (torch's generator, 4,000 draws)
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    boxes = [RandomResizedCrop.get_params(torch.empty(3, 32, 40), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    tv_area = torch.tensor([b[2] * b[3] / (32 * 40) for b in boxes], dtype=torch.float64)
    tv_ratio = torch.tensor([b[3] / b[2] for b in boxes], dtype=torch.float64)
    assert area.mean().item() == pytest.approx(tv_area.mean().item(), abs=0.02)  # about 0.47: big boxes miss
    assert ratio.mean().item() == pytest.approx(tv_ratio.mean().item(), abs=0.02)
    # no box can fit: every view falls back to the whole image's centre at the ratio clamped into range
    wide = Views(0, crop="resized", scale=(1.0, 1.0), ratio=(2.0, 3.0))
    top, left, h, w, _ = resized_params(wide, 0, torch.arange(5), (32, 32))
    assert (h == 16).all() and (w == 32).all() and (top == 8).all() and (left == 0).all()


def test_views_are_the_same_in_any_batch_so_the_logit_table_stays_exact(images):
    """A view depends on (seed, epoch, image) alone: the teacher's table row of image i is the view any run sees,
    whatever the batch holds, mixing included."""
    for views in (RESIZED, Views(3, crop="resized", size=(24, 24), mix=Mix("cutmix", 1.0, 1.0)),
                  Views(3, crop="resized", size=(24, 24), mix=Mix("mixup", 1.0, 1.0))):
        whole = augmented_views(images, torch.arange(40), views, 2)
        some = augmented_views(images, torch.tensor([31, 4, 17]), views, 2)
        torch.testing.assert_close(some, whole[[31, 4, 17]], atol=0, rtol=0)
        assert not torch.equal(augmented_views(images, torch.tensor([4]), views, 3), whole[[4]])  # a new epoch


def test_evaluation_is_the_centre_crop_and_a_padded_crop_may_come_from_larger_images(images):
    views = Views(0, size=(24, 24))
    evaluated = plain_views(images, torch.arange(40), views)
    torch.testing.assert_close(evaluated, normalize(images[:, :, 4:28, 4:28], views))
    # the padded crop from stored images larger than the view: offsets span the margin and the padding
    dy, dx, _ = view_params(Views(0, padding=2, size=(24, 24)), 0, torch.arange(4000), (32, 32))
    assert int(dy.min()) == int(dx.min()) == 0 and int(dy.max()) == int(dx.max()) == 2 * 2 + 32 - 24
    assert augmented_views(images, torch.arange(5), Views(0, padding=2, size=(24, 24)), 0).shape == (5, 3, 24, 24)


def test_the_views_key_names_the_crop_and_size_and_the_padded_crops_key_is_unchanged():
    assert Views(0).key == "views:0,4,True,0.4914,0.4822,0.4465,0.2023,0.1994,0.201"  # as before they existed
    assert RESIZED.key.endswith(f",resized:0.08:1:0.75:{4 / 3:.6g},size:24x24")
    assert Views(3, crop="resized", size=(24, 24), scale=(0.3, 1.0)).key != RESIZED.key


def test_a_study_of_resized_crops_from_stored_images_trains_its_baselines(tiny_archive, tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_BASE.replace("data:\n  val_size: 100\n", "data:\n  val_size: 100\n  image_size: 24\n"
                                                                   "  stored_size: 28\n")
                     + "augment:\n  crop: resized\n  scale: [0.35, 1.0]\n")
    r = subprocess.run([sys.executable, "-m", "kdsearch", "baselines", str(study), "--data", str(tiny_archive),
                        "--results", str(tmp_path / "r")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test images of 24x24 held at 28x28, 10 classes" in r.stderr
    rows = json.loads((tmp_path / "r" / "tiny" / "baselines.json").read_text())
    assert [row["model"] for row in rows] == ["teacher", "student_mse", "student_ce", "kd_reference"]
    assert all(0 <= row["test_acc"] <= 100 and not math.isnan(row["val_acc"]) for row in rows)
