"""Batched augmentation on uint8 tensors: random crop 32 with zero padding 4, random horizontal flip.

The view of training image i in epoch e is a pure function of (seed, e, i): its crop offset and flip come from
an integer hash, not from a random generator's state. So any run, any batch order and any device see the same
view of the same image, and the teacher's logits for every view can be computed once per study and reused.
"""
import torch

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4
_MASK = 0xFFFFFFFF


def _hash32(x):
    # A well-mixed bijection on 32-bit integers ("lowbias32"-style). Products stay below 2**63, so it is exact
    # in int64 on every device, and the same for Python ints and tensors.
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK
    return (x >> 16) ^ x


def view_params(seed, epoch, idx):
    """Crop offsets (dy, dx in 0..2*PAD) and flip flags (0/1) for images `idx` (int64 tensor) in `epoch`."""
    key = _hash32(_hash32((seed & _MASK) ^ 0x9E3779B9) ^ (epoch & _MASK))
    h = _hash32(idx.long() ^ key)
    span = 2 * PAD + 1
    return h % span, (h // span) % span, (h // (span * span)) % 2


def normalize(x_uint8):
    """uint8 (B, 3, H, W) -> float32 normalised as the notebook, keeping the memory format."""
    mean = torch.tensor(MEAN, device=x_uint8.device).view(1, 3, 1, 1) * 255
    inv_std = 1 / (torch.tensor(STD, device=x_uint8.device).view(1, 3, 1, 1) * 255)
    return (x_uint8.float() - mean) * inv_std


def augmented_views(images, idx, seed, epoch):
    """Augmented, normalised views of images[idx] for `epoch`, as float (B, 3, H, W) in channels_last.

    images: uint8 (N, 3, H, W), ideally channels_last (its NHWC storage is what we gather from).
    One gather does pad, crop and flip for the whole batch: output pixel (y, x) of image b reads padded pixel
    (dy_b + y, dx_b + x), or (dy_b + y, dx_b + W - 1 - x) when b is flipped.
    """
    idx = idx.to(images.device)
    batch = images[idx].permute(0, 2, 3, 1)  # (B, H, W, C): contiguous when images are channels_last
    B, H, W, _ = batch.shape
    padded = torch.nn.functional.pad(batch, (0, 0, PAD, PAD, PAD, PAD))  # zero padding, (B, H+8, W+8, C)
    dy, dx, flip = view_params(seed, epoch, idx)
    ar_h = torch.arange(H, device=images.device)
    ar_w = torch.arange(W, device=images.device)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None].bool(), W - 1 - ar_w, ar_w)  # (B, W)
    out = padded[torch.arange(B, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return normalize(out.permute(0, 3, 1, 2))  # NHWC storage viewed as NCHW = channels_last


def plain_views(images, idx):
    """Un-augmented, normalised images[idx] (evaluation)."""
    return normalize(images[idx.to(images.device)])
