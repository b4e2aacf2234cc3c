"""Training and evaluation of one model on in-memory uint8 tensors.

Imports torch only: no Ray, Optuna or MLflow.

A run is `train(model, recipe, Lesson(data.train, views, data.val, table), seed=...)`: every epoch it shuffles,
takes each batch's augmented views (augment.py), steps, then evaluates on the validation split and calls
`report` with the epoch's metrics.
KD runs read the teacher's logits for each view from a precomputed (epochs, N, classes) table instead of
running the teacher (teacher.py computes it once per study).
"""
import os
import time
from dataclasses import dataclass
from typing import Optional

import torch

from .augment import MixedLabels, Views, plain_views, training_batch
from .data import Split
from .errors import UserError
from .levers import make_ema, make_optimizer, make_schedule
from .losses import NEEDS_TEACHER, make_loss
from .networks import logits_of


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


def new_model(networks, role, seed, device):
    """A new network of `role` (teacher or student) of the study's networks.Networks, initialised by `seed`."""
    torch.manual_seed(seed)  # the same seed gives the same initial weights
    return networks.build(role).to(device, memory_format=torch.channels_last)


def _autocast(device):
    # bf16 on CUDA only: this kind of CPU has no fast bf16 (it runs ~10x slower than float32)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_step(model, opt, loss_fn, x, y, t=None, clip=None):
    """One optimisation step, the gradients' global norm clipped to `clip` when given; returns the (detached)
    loss and its parts, without a device sync. y: the labels, or a mixed batch's MixedLabels."""
    with _autocast(x.device):
        out = logits_of(model(x))
    if isinstance(y, MixedLabels):  # the hard-label term reads the mixed labels, as probabilities
        y = y.probs(out.shape[1])
    # the loss in float32: with bf16 logits, logits / T and the softmaxes would lose ~0.4% of precision
    loss, parts = loss_fn(out.float(), y, None if t is None else t.float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.detach(), parts


@dataclass(frozen=True)
class Lesson:
    """What a run learns from, the same for every seed of a study: the training split, the study's views (each
    image's augmented view per epoch, and the normalisation), the validation split each epoch is scored on, and the
    teacher's logits for exactly those views (an (epochs, len(train), classes) tensor, which a distillation loss
    requires)."""
    train: Split
    views: Views
    val: Optional[Split] = None
    teacher_logits: Optional[torch.Tensor] = None


def train(model, recipe, lesson, *, seed, report=None, resume=None):
    """Train `model` by `recipe` on `lesson` (a Lesson); return the per-epoch history.

    seed: batch order (the views stay the lesson's, which the teacher's logits hold).
    report(metrics, state): called after every epoch with {"epoch", "train_loss", "lr" (the epoch's),
    "loss_<part>" for each of the loss's parts (e.g. loss_hard, loss_soft), "val_acc", "time_s"} and a function
    that returns the run's whole state (weights, optimizer, schedule, batch-order generator, history, and with
    recipe.ema the running weights and their average: what a checkpoint holds; its "model" is the weights
    evaluated, the average when there is one). resume: such a state; training goes on from its epoch as if never
    stopped. With recipe.ema, `model` holds the average when training ends.
    A loss that turns NaN or infinite stops the run at once: its last metrics say "diverged": True.
    """
    loss_fn = make_loss(recipe)
    train, views, teacher_logits = lesson.train, lesson.views, lesson.teacher_logits
    needs_teacher = recipe.loss in NEEDS_TEACHER
    if needs_teacher and (teacher_logits is None or len(teacher_logits) < views.table_epochs(recipe.epochs)):
        raise ValueError(f"the {recipe.loss} loss needs teacher logits for every epoch's views")
    device = train.x.device
    opt, ema = make_optimizer(model, recipe), make_ema(model, recipe.ema)
    sched = make_schedule(opt, recipe)
    scored = ema.module if ema is not None else model  # what is evaluated and kept: the average, when there is one
    order = torch.Generator().manual_seed(seed)
    history, spent = [], 0.0
    if resume is not None:
        model.load_state_dict(resume["raw"] if ema is not None else resume["model"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        if sched is not None:
            sched.load_state_dict(resume["scheduler"])
        order.set_state(resume["order"])
        history = list(resume["history"])
        spent = history[-1]["time_s"] if history else 0.0

    def state():
        return {"model": scored.state_dict(), "optimizer": opt.state_dict(), "order": order.get_state(),
                "scheduler": sched.state_dict() if sched is not None else None, "history": history,
                **({"raw": model.state_dict(), "ema": ema.state_dict()} if ema is not None else {})}

    n, start = len(train), time.perf_counter() - spent
    for epoch in range(len(history), recipe.epochs):
        model.train()
        lr = opt.param_groups[0]["lr"]  # this epoch's, before the schedule steps
        perm = torch.randperm(n, generator=order).to(device)
        total, sums, steps = torch.zeros((), device=device), {}, 0  # summed on the device: no sync per step
        for i in range(0, n, recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a batch of one
                continue
            x, y = training_batch(train, idx, views, epoch)
            t = teacher_logits[views.epoch(epoch), idx] if needs_teacher else None
            loss, parts = train_step(model, opt, loss_fn, x, y, t, recipe.grad_clip)
            if ema is not None:
                ema.update_parameters(model)
            total += loss
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v
            steps += 1
            if steps % 25 == 0 and not torch.isfinite(total):  # a sync every 25 steps: a diverged run stops now
                break
        if sched is not None:
            sched.step()
        steps = max(steps, 1)
        diverged = not torch.isfinite(total).item()
        metrics = {"epoch": epoch + 1, "train_loss": total.item() / steps, "lr": lr,
                   **{f"loss_{k}": float(v) / steps for k, v in sums.items()},
                   "val_acc": evaluate(scored, lesson.val, views) if lesson.val is not None else None,
                   "time_s": time.perf_counter() - start, **({"diverged": True} if diverged else {})}
        history.append(metrics)
        if report is not None:
            report(metrics, state)
        if diverged:
            break
    if ema is not None:  # the caller's model becomes the average: the one stored, tested and distilled from
        model.load_state_dict(scored.state_dict())
    return history


def curve_names(metrics):
    """The per-epoch curves of a run, from one epoch's metrics (train's report): what MLflow and the report
    keep of each epoch besides its number."""
    return ["val_acc", "train_loss"] + sorted(k for k in metrics if k.startswith("loss_"))


@torch.no_grad()
def predict(model, x_uint8, views, batch_size=1024):
    """Logits for all images (eval mode, no grad, large batches): of their plain views, normalised as `views` (a
    Views), or of `views(idx)` when it is a function of the images' indices."""
    model.eval()
    out = []
    for i in range(0, len(x_uint8), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(x_uint8)), device=x_uint8.device)
        with _autocast(x_uint8.device):
            x = views(idx) if callable(views) else plain_views(x_uint8, idx, views)
            out.append(logits_of(model(x)).float())
    return torch.cat(out)


def evaluate(model, split, views, batch_size=1024):
    """Top-1 accuracy in percent on plain views (normalised as `views`), without augmentation."""
    return 100.0 * (predict(model, split.x, views, batch_size).argmax(1) == split.y).float().mean().item()
