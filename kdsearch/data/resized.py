"""RandomResizedCrop views for large images (augment.crop: resized): each view's box a pure function of (seed,
epoch, image), as every view of augment.py, so that the teacher's logit table stays exact; the boxes resized on
the device in batches (four gathers and their bilinear weights), no per-image PIL."""
import math

import torch

from kdsearch.data.viewhash import stream, uniform


def resized_params(views, epoch, idx, stored):
    """RandomResizedCrop's boxes (top, left, height, width) and flip flags of images `idx` in `epoch`, from stored
    images of `stored` (H, W): torchvision's rule (get_params), each draw a hash of (seed, epoch, image): up to 10
    tries of an area share in views.scale and a log-uniform aspect ratio in views.ratio, the first box that fits
    placed uniformly; else the whole image's centre at the ratio clamped into views.ratio."""
    H, W = stored
    idx = idx.long()
    found = torch.zeros_like(idx, dtype=torch.bool)
    top, left, bh, bw = (torch.zeros_like(idx) for _ in range(4))
    lo, hi = math.log(views.ratio[0]), math.log(views.ratio[1])
    for attempt in range(10):
        salt = 0x68E31DA4 + 4 * attempt
        area = H * W * (views.scale[0] + (views.scale[1] - views.scale[0]) * uniform(stream(views, epoch, idx, salt)))
        aspect = torch.exp(lo + (hi - lo) * uniform(stream(views, epoch, idx, salt + 1)))
        w, h = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
        fits = ~found & (w > 0) & (h > 0) & (w <= W) & (h <= H)
        y = (uniform(stream(views, epoch, idx, salt + 2)) * (H - h + 1)).floor().long()
        x = (uniform(stream(views, epoch, idx, salt + 3)) * (W - w + 1)).floor().long()
        top, left, bh, bw = (torch.where(fits, new, old) for new, old in ((y, top), (x, left), (h, bh), (w, bw)))
        found |= fits
    # the fallback: the centre crop at the image's own ratio clamped into views.ratio
    if W / H < views.ratio[0]:
        fw, fh = W, int(round(W / views.ratio[0]))
    elif W / H > views.ratio[1]:
        fw, fh = int(round(H * views.ratio[1])), H
    else:
        fw, fh = W, H
    top, left = torch.where(found, top, (H - fh) // 2), torch.where(found, left, (W - fw) // 2)
    bh, bw = torch.where(found, bh, fh), torch.where(found, bw, fw)
    h = stream(views, epoch, idx, 0x3C6EF372)
    flip = h % 2 if views.flip else torch.zeros_like(h)
    return top, left, bh, bw, flip


def resized_views(batch, idx, views, epoch):
    """RandomResizedCrop views of a (B, H, W, C) uint8 batch, as float (B, h, w, C) pixel values: each image's
    box (resized_params) resized to views.size (or (H, W)) bilinearly, as torch's interpolate does it on the box
    alone (align_corners False, no antialiasing: a GPU batch pipeline's resize), then flipped."""
    B, H, W, _ = batch.shape
    oh, ow = views.size or (H, W)
    top, left, bh, bw, flip = resized_params(views, epoch, idx, (H, W))
    y0, y1, wy = _taps(top, bh, oh)
    x0, x1, wx = _taps(left, bw, ow)
    flipped = flip[:, None].bool()
    x0, x1, wx = (torch.where(flipped, t.flip(1), t) for t in (x0, x1, wx))
    b = torch.arange(B, device=batch.device)[:, None, None]

    def at(rows, cols):
        return batch[b, rows[:, :, None], cols[:, None, :]].float()  # (B, h, w, C)
    wy, wx = wy[:, :, None, None], wx[:, None, :, None]
    out = (1 - wy) * ((1 - wx) * at(y0, x0) + wx * at(y0, x1)) + wy * ((1 - wx) * at(y1, x0) + wx * at(y1, x1))
    return out


def _taps(start, length, out):
    """The two source pixels of each of `out` output pixels resizing [start, start + length) (per image), and
    the second one's weight: torch's interpolate (source (j + 0.5) * length / out - 0.5, clamped at 0)."""
    j = torch.arange(out, device=start.device, dtype=torch.float64)
    src = ((j[None] + 0.5) * (length[:, None].double() / out) - 0.5).clamp_min(0)
    lo = src.floor().long()
    hi = torch.minimum(lo + 1, length[:, None] - 1)
    return start[:, None] + lo, start[:, None] + hi, (src - lo).float()
