"""Batched augmentation on uint8 tensors: a random crop of the image's size with zero padding (4 at 32x32),
a random horizontal flip (which a study can turn off), and normalisation by per-channel mean and std.

The view of training image i in epoch e is a pure function of (seed, e, i): its crop offset and flip come from
an integer hash, not from a random generator's state. So any run, any batch order and any device see the same
view of the same image, and the teacher's logits for every view can be computed once per study and reused.
"""
from dataclasses import astuple, dataclass

import torch

MEAN = (0.4914, 0.4822, 0.4465)  # the notebook's CIFAR-10 constants (its loop in `kdsearch bench`)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4
_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Views:
    """How a study's images are seen: the seed that fixes every view, the crop's zero padding, whether views
    flip, and the normalisation (per-channel mean and std of pixel values scaled to 0..1, as torchvision's)."""
    seed: int
    padding: int = PAD
    flip: bool = True
    mean: tuple = MEAN
    std: tuple = STD

    @property
    def key(self):
        """Everything that makes a view: part of the key of every run and logit table made with these views."""
        return "views:" + ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in _flat(astuple(self)))


def _flat(values):
    for v in values:
        yield from (_flat(v) if isinstance(v, tuple) else [v])


def _hash32(x):
    # A well-mixed bijection on 32-bit integers ("lowbias32"-style). Products stay below 2**63, so it is exact
    # in int64 on every device, and the same for Python ints and tensors.
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK
    return (x >> 16) ^ x


def view_params(views, epoch, idx):
    """Crop offsets (dy, dx in 0..2*padding) and flip flags (0/1) of images `idx` (int64 tensor) in `epoch`.
    They depend on the padding and the flip, not on the images: at padding 4 with flips, the notebook's views."""
    key = _hash32(_hash32((views.seed & _MASK) ^ 0x9E3779B9) ^ (epoch & _MASK))
    h = _hash32(idx.long() ^ key)
    span = 2 * views.padding + 1
    flip = (h // (span * span)) % 2 if views.flip else torch.zeros_like(h)
    return h % span, (h // span) % span, flip


def normalize(x_uint8, views):
    """uint8 (B, 3, H, W) -> float32 normalised by the views' mean and std, keeping the memory format."""
    mean = torch.tensor(views.mean, device=x_uint8.device).view(1, 3, 1, 1) * 255
    inv_std = 1 / (torch.tensor(views.std, device=x_uint8.device).view(1, 3, 1, 1) * 255)
    return (x_uint8.float() - mean) * inv_std


def augmented_views(images, idx, views, epoch):
    """Augmented, normalised views (a Views) of images[idx] for `epoch`, as float (B, 3, H, W) in channels_last.

    images: uint8 (N, 3, H, W), ideally channels_last (its NHWC storage is what we gather from).
    One gather does pad, crop and flip for the whole batch: output pixel (y, x) of image b reads padded pixel
    (dy_b + y, dx_b + x), or (dy_b + y, dx_b + W - 1 - x) when b is flipped.
    """
    idx = idx.to(images.device)
    batch = images[idx].permute(0, 2, 3, 1)  # (B, H, W, C): contiguous when images are channels_last
    B, H, W, _ = batch.shape
    pad = views.padding
    padded = torch.nn.functional.pad(batch, (0, 0, pad, pad, pad, pad))  # zero padding, (B, H+2p, W+2p, C)
    dy, dx, flip = view_params(views, epoch, idx)
    ar_h = torch.arange(H, device=images.device)
    ar_w = torch.arange(W, device=images.device)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None].bool(), W - 1 - ar_w, ar_w)  # (B, W)
    out = padded[torch.arange(B, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return normalize(out.permute(0, 3, 1, 2), views)  # NHWC storage viewed as NCHW = channels_last


def plain_views(images, idx, views):
    """Un-augmented images[idx], normalised as `views` (evaluation)."""
    return normalize(images[idx.to(images.device)], views)


def channel_stats(x_uint8):
    """(2, 3) float64: the per-channel mean and std (population) of uint8 (N, 3, H, W) images, in 0..1 units.
    Summed per chunk in float64: the same figures on any device and chunking, to the 1e-12."""
    total, squares, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for i in range(0, len(x_uint8), 4096):
        chunk = x_uint8[i:i + 4096].to("cpu", torch.float64) / 255
        total += chunk.sum((0, 2, 3))
        squares += (chunk * chunk).sum((0, 2, 3))
        count += chunk.numel() // 3
    mean = total / count
    return torch.stack([mean, (squares / count - mean * mean).clamp_min(0).sqrt()])
