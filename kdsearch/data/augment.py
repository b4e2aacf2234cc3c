"""Batched augmentation on uint8 tensors: a random crop of the image's size with zero padding (4 at 32x32),
a random horizontal flip (which a study can turn off), mixup or CutMix with a partner image, and normalisation by
per-channel mean and std.

The view of training image i in epoch e is a pure function of (seed, e, i): its crop offset, its flip, its
partner image and mixing weight come from integer hashes, not from a random generator's state. So any run, any
batch order and any device see the same view of the same image, and the teacher's logits for every view can be
computed once per study and reused: with mixing, they are the teacher's logits of exactly the mixed image the
student sees (Beyer et al., "A good teacher is patient and consistent", CVPR 2022). With a `period`, epoch e
shows epoch e % period's views, so that the logit table of a long schedule stays `period` epochs long.
"""
import functools
from dataclasses import astuple, dataclass
from typing import Optional

import numpy as np
import torch

from kdsearch.data.resized import resized_views
from kdsearch.data.viewhash import epoch_key, hash32, stream, uniform

MEAN = (0.4914, 0.4822, 0.4465)  # the notebook's CIFAR-10 constants (its loop in `kdsearch bench`)
STD = (0.2023, 0.1994, 0.2010)
PAD = 4


@dataclass(frozen=True)
class Mix:
    """Mixing of a view with a partner view (the partner image's own crop and flip of the same epoch), with
    probability `prob`, by a weight lam ~ Beta(alpha, alpha) on the view's own image:
    mixup (Zhang et al., ICLR 2018) blends the two, lam * own + (1 - lam) * partner; CutMix (Yun et al., ICCV 2019)
    pastes a box of the partner of area about (1 - lam), lam then being the exact share of own pixels left.
    The labels mix by the same weight."""
    kind: str  # mixup or cutmix
    alpha: float
    prob: float


@dataclass(frozen=True)
class Views:
    """How a study's images are seen: the seed that fixes every view, the crop's zero padding, whether views
    flip, and the normalisation (per-channel mean and std of pixel values scaled to 0..1, as torchvision's)."""
    seed: int
    padding: int = PAD
    flip: bool = True
    mean: tuple = MEAN
    std: tuple = STD
    mix: Optional[Mix] = None  # a recipe's mixup or CutMix (schema.Recipe.mix, settings from the study's augment)
    period: Optional[int] = None  # epoch e shows epoch e % period's views; None: every epoch its own
    crop: str = "pad"  # pad: a crop from the zero-padded image; resized: RandomResizedCrop's box, resized
    scale: tuple = (0.08, 1.0)  # resized: the box's share of the image's area, drawn uniformly
    ratio: tuple = (3 / 4, 4 / 3)  # resized: the box's aspect ratio (width / height), drawn log-uniformly
    size: Optional[tuple] = None  # (H, W) of a view, cropped from larger stored images; None: the images' own

    @property
    def key(self):
        """Everything that makes a view: part of the key of every run and logit table made with these views
        (what came after the padded crop only when set, so that views without it keep the keys they had)."""
        key = "views:" + ",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in _flat(astuple(self)[:5]))
        if self.mix is not None:
            key += f",{self.mix.kind}:{self.mix.alpha:.6g}:{self.mix.prob:.6g}"
        key += f",period:{self.period}" if self.period else ""
        if self.crop != "pad":
            key += f",{self.crop}:" + ":".join(f"{v:.6g}" for v in (*self.scale, *self.ratio))
        return key + (f",size:{self.size[0]}x{self.size[1]}" if self.size else "")

    def epoch(self, epoch):
        """The epoch whose views training epoch `epoch` shows (and whose row of the logit table it reads)."""
        return epoch % self.period if self.period else epoch

    def table_epochs(self, epochs):
        """The rows of a logit table that serves runs of up to `epochs` epochs: at most `period`."""
        return min(epochs, self.period) if self.period else epochs


def _flat(values):
    for v in values:
        yield from (_flat(v) if isinstance(v, tuple) else [v])


def view_params(views, epoch, idx, stored=None):
    """Crop offsets (dy, dx in 0..2*padding, plus the stored images' margin over views.size) and flip flags (0/1)
    of images `idx` (int64 tensor) in `epoch`. They depend on the padding, the sizes and the flip, not on the
    images: at padding 4 with flips, the notebook's views."""
    h = hash32(idx.long() ^ epoch_key(views, epoch))
    margin = [s - v for s, v in zip(stored, views.size)] if stored and views.size else (0, 0)
    span_y, span_x = (2 * views.padding + 1 + m for m in margin)
    flip = (h // (span_y * span_x)) % 2 if views.flip else torch.zeros_like(h)
    return h % span_y, (h // span_y) % span_x, flip


def normalize(x_uint8, views):
    """uint8 (B, 3, H, W) -> float32 normalised by the views' mean and std, keeping the memory format."""
    mean = torch.tensor(views.mean, device=x_uint8.device).view(1, 3, 1, 1) * 255
    inv_std = 1 / (torch.tensor(views.std, device=x_uint8.device).view(1, 3, 1, 1) * 255)
    return (x_uint8.float() - mean) * inv_std


@functools.cache
def _beta_quantiles(alpha, points=4096):
    """Beta(alpha, alpha)'s quantile function at u = k / points, k = 0..points, in float64 (CPU).

    Its CDF on [0, 1/2] is integrated after substituting x = s^(1/alpha), which turns the density's x^(alpha-1)
    singularity at 0 into a smooth integrand (1 - s^(1/alpha))^(alpha-1); the upper half is its mirror image.
    Plain float64 arithmetic: the same quantiles on every machine and torch version (a sampler's may change)."""
    s = torch.linspace(0, 0.5 ** alpha, (1 << 16) + 1, dtype=torch.float64)
    f = (1 - s ** (1 / alpha)) ** (alpha - 1)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((f[1:] + f[:-1]) / 2, 0)])
    low = np.interp(np.linspace(0, 0.5, points // 2 + 1), (0.5 * cdf / cdf[-1]).numpy(), (s ** (1 / alpha)).numpy())
    return torch.from_numpy(np.concatenate([low, 1 - low[-2::-1]]))


@functools.cache
def _beta_quantiles_on(alpha, device):
    return _beta_quantiles(alpha).to(device)  # once per device: not a host-to-device copy every batch


def beta_weights(u, alpha):
    """lam ~ Beta(alpha, alpha) for uniforms `u` (float64 in (0, 1)): the quantile function, interpolated."""
    q = _beta_quantiles_on(float(alpha), u.device)
    pos = u * (len(q) - 1)
    k = pos.floor().long().clamp(max=len(q) - 2)
    return q[k] + (pos - k) * (q[k + 1] - q[k])


@dataclass
class MixedLabels:
    """The labels of a mixed batch: each view's own label, its partner's, and the own label's weight lam (1 for
    a view left unmixed). `probs` gives the (B, classes) targets the hard-label term reads."""
    own: torch.Tensor
    partner: torch.Tensor
    weight: torch.Tensor  # float32 (B,)

    def probs(self, classes):
        w = self.weight[:, None]
        return (w * torch.nn.functional.one_hot(self.own, classes) +
                (1 - w) * torch.nn.functional.one_hot(self.partner, classes))


def mix_params(views, epoch, idx, n, size):
    """The mixing of images `idx` of a training split of `n` images of `size` (H, W) in `epoch`, with views.mix:
    (partner index, own weight lam in float64, and the CutMix box (y0, y1, x0, x1) or None). A view is mixed with
    probability mix.prob; an unmixed one has lam 1 (and an empty box)."""
    mix, idx = views.mix, idx.long()
    partner = stream(views, epoch, idx, 0x1B873593) % n
    mixed = uniform(stream(views, epoch, idx, 0xCC9E2D51)) < mix.prob
    lam = torch.where(mixed, beta_weights(uniform(stream(views, epoch, idx, 0x85EBCA6B)), mix.alpha), 1.0)
    if mix.kind == "mixup":
        return partner, lam, None
    # CutMix's box, as Yun et al.'s code: sides (H, W) * sqrt(1 - lam) about a uniform centre, clipped to the image
    H, W = size
    cut = (1 - lam).sqrt()
    cut_h, cut_w = (H * cut).floor().long(), (W * cut).floor().long()
    cy = (uniform(stream(views, epoch, idx, 0xE6546B64)) * H).floor().long()
    cx = (uniform(stream(views, epoch, idx, 0x27D4EB2F)) * W).floor().long()
    y0, y1 = (cy - cut_h // 2).clamp(0, H), (cy + cut_h // 2).clamp(0, H)
    x0, x1 = (cx - cut_w // 2).clamp(0, W), (cx + cut_w // 2).clamp(0, W)
    return partner, 1 - ((y1 - y0) * (x1 - x0)).double() / (H * W), (y0, y1, x0, x1)


def augmented_views(images, idx, views, epoch):
    """Augmented (and with views.mix, mixed) normalised views of images[idx] for `epoch`, as float (B, 3, H, W)
    in channels_last: what the student trains on and the teacher's logit table holds."""
    return _views(images, idx, views, epoch)[0]


def training_batch(split, idx, views, epoch):
    """(views, labels) of the training images `idx` of `split` in `epoch`: the labels are split.y[idx], or with
    views.mix a MixedLabels."""
    x, mixing = _views(split.x, idx, views, epoch)
    if mixing is None:
        return x, split.y[idx]
    partner, lam = mixing
    return x, MixedLabels(split.y[idx], split.y[partner], lam.float())


def _views(images, idx, views, epoch):
    """(views, None), or with views.mix (mixed views, (partner indices, own weights))."""
    idx = idx.to(images.device)
    x = _cropped(images, idx, views, epoch)
    if views.mix is None:
        return x, None
    partner, lam, box = mix_params(views, epoch, idx, len(images), x.shape[2:])  # the view's size
    other = _cropped(images, partner, views, epoch)
    if box is None:
        w = lam.float()[:, None, None, None]
        x = w * x + (1 - w) * other  # mixing normalised pixels = normalising mixed ones: weights sum to 1
    else:
        y0, y1, x0, x1 = (b[:, None] for b in box)
        rows = torch.arange(x.shape[2], device=x.device)
        cols = torch.arange(x.shape[3], device=x.device)
        inside = (((rows >= y0) & (rows < y1))[:, :, None] & ((cols >= x0) & (cols < x1))[:, None, :])[:, None]
        x = torch.where(inside, other, x)
    return x.contiguous(memory_format=torch.channels_last), (partner, lam)


def _cropped(images, idx, views, epoch):
    """Augmented, normalised views (a Views) of images[idx] for `epoch`, as float (B, 3, h, w) in channels_last,
    (h, w) = views.size or the images' own.

    images: uint8 (N, 3, H, W), ideally channels_last (its NHWC storage is what we gather from).
    One gather does pad, crop and flip for the whole batch: output pixel (y, x) of image b reads padded pixel
    (dy_b + y, dx_b + x), or (dy_b + y, dx_b + w - 1 - x) when b is flipped. A resized crop is four gathers.
    """
    batch = images[idx].permute(0, 2, 3, 1)  # (B, H, W, C): contiguous when images are channels_last
    if views.crop == "resized":
        return normalize(resized_views(batch, idx, views, epoch).permute(0, 3, 1, 2), views)
    B, H, W, _ = batch.shape
    oh, ow = views.size or (H, W)
    pad = views.padding
    padded = torch.nn.functional.pad(batch, (0, 0, pad, pad, pad, pad))  # zero padding, (B, H+2p, W+2p, C)
    dy, dx, flip = view_params(views, epoch, idx, (H, W))
    ar_h = torch.arange(oh, device=images.device)
    ar_w = torch.arange(ow, device=images.device)
    rows = dy[:, None] + ar_h  # (B, h)
    cols = dx[:, None] + torch.where(flip[:, None].bool(), ow - 1 - ar_w, ar_w)  # (B, w)
    out = padded[torch.arange(B, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return normalize(out.permute(0, 3, 1, 2), views)  # NHWC storage viewed as NCHW = channels_last


def plain_views(images, idx, views):
    """Un-augmented images[idx], normalised as `views` (evaluation): their centre crop of views.size when the
    stored images are larger (torchvision's CenterCrop)."""
    x = images[idx.to(images.device)]
    if views.size and tuple(x.shape[2:]) != tuple(views.size):
        (H, W), (oh, ow) = x.shape[2:], views.size
        top, left = int(round((H - oh) / 2.0)), int(round((W - ow) / 2.0))
        x = x[:, :, top:top + oh, left:left + ow]
    return normalize(x, views)


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
