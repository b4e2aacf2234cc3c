"""Training and evaluation on in-memory uint8 tensors. Imports torch and numpy only: no Ray, Optuna or MLflow.

A run is `train(model, recipe, data.train, ...)`: every epoch it shuffles, takes each batch's augmented views
(augment.py), steps, then evaluates on the validation split and calls `report` with the epoch's metrics.
KD runs read the teacher's logits for each view from a precomputed (epochs, N, classes) table instead of
running the teacher (teacher.py computes it once per study).
"""
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from .augment import augmented_views, plain_views
from .data import stratified_split
from .errors import UserError
from .losses import LOSSES
from .models import build_model


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, 3, H, W), channels_last (NHWC storage), on the training device
    y: torch.Tensor  # int64 (N,)

    def __len__(self):
        return len(self.y)


@dataclass
class StudyData:
    train: Split
    val: Split
    test: Split
    classes: list
    key: str  # fingerprint of the source and the split: part of every cache key built on this data


def pick_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("the study asks for device: cuda but torch sees no CUDA device; fix: set device: auto or cpu")
    return torch.device(name)


def set_threads(n=0):
    """Set torch's CPU threads explicitly (0: one per core); Ray trials pass their CPU count."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def to_split(x_nhwc, y, device):
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc)).to(device).permute(0, 3, 1, 2)
    return Split(x, torch.from_numpy(np.asarray(y, np.int64)).to(device))


def prepare(arrays, val_size, train_subset, seed, device):
    """Carve the seeded, stratified validation split (and an optional training subset) and move everything
    to `device` as uint8 tensors."""
    val_idx, train_idx = stratified_split(arrays.train_y, val_size, seed)
    if train_subset is not None and train_subset < len(train_idx):
        train_idx, _ = stratified_split(arrays.train_y, train_subset, seed + 1, pool=train_idx)
    key = f"{arrays.key}-v{val_size}-s{train_subset}-seed{seed}"
    return StudyData(
        train=to_split(arrays.train_x[train_idx], arrays.train_y[train_idx], device),
        val=to_split(arrays.train_x[val_idx], arrays.train_y[val_idx], device),
        test=to_split(arrays.test_x, arrays.test_y, device),
        classes=list(arrays.classes), key=key)


def new_model(name, num_classes, seed, device):
    torch.manual_seed(seed)  # the same seed gives the same initial weights
    return build_model(name, num_classes).to(device, memory_format=torch.channels_last)


def _autocast(device):
    # bf16 on CUDA only: this kind of CPU has no fast bf16 (it runs ~10x slower than float32)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def make_optimizer(model, recipe):
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def train_step(model, opt, loss_fn, recipe, x, y, t=None):
    """One optimisation step; returns the (detached) loss without a device sync."""
    with _autocast(x.device):
        out = model(x)
    # the loss in float32: with bf16 logits, logits / T and the softmaxes would lose ~0.4% of precision
    loss = loss_fn(out.float(), y, None if t is None else t.float(), recipe)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def train(model, recipe, train, *, seed, view_seed, val=None, teacher_logits=None, report=None):
    """Train `model` by `recipe` on split `train`; return the per-epoch history.

    seed: batch order. view_seed: the study seed that fixes every image's augmented view per epoch (and so
    matches `teacher_logits`, a (>= recipe.epochs, len(train), classes) tensor, required for the KD loss).
    report(metrics): called after every epoch with {"epoch", "train_loss", "val_acc", "time_s"}.
    """
    loss_fn = LOSSES[recipe.loss]
    if recipe.loss == "kd" and (teacher_logits is None or len(teacher_logits) < recipe.epochs):
        raise ValueError("the KD loss needs teacher logits for every epoch")
    device = train.x.device
    opt = make_optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.epochs) if recipe.schedule == "cosine" else None
    order = torch.Generator().manual_seed(seed)
    n, history, start = len(train), [], time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        perm = torch.randperm(n, generator=order).to(device)
        total, steps = torch.zeros((), device=device), 0
        for i in range(0, n, recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            x = augmented_views(train.x, idx, view_seed, epoch)
            t = None if recipe.loss != "kd" else teacher_logits[epoch, idx]
            total += train_step(model, opt, loss_fn, recipe, x, train.y[idx], t)
            steps += 1
        if sched is not None:
            sched.step()
        metrics = {"epoch": epoch + 1, "train_loss": total.item() / max(steps, 1),
                   "val_acc": evaluate(model, val) if val is not None else None,
                   "time_s": time.perf_counter() - start}
        history.append(metrics)
        if report is not None:
            report(metrics)
    return history


@torch.no_grad()
def predict(model, x_uint8, batch_size=1024, views=None):
    """Logits for all images (eval mode, no grad, large batches); `views(idx)` replaces the plain views."""
    model.eval()
    out = []
    for i in range(0, len(x_uint8), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(x_uint8)), device=x_uint8.device)
        with _autocast(x_uint8.device):
            out.append(model(views(idx) if views else plain_views(x_uint8, idx)).float())
    return torch.cat(out)


def evaluate(model, split, batch_size=1024):
    """Top-1 accuracy in percent, without augmentation."""
    return 100.0 * (predict(model, split.x, batch_size).argmax(1) == split.y).float().mean().item()
