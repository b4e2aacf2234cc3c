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
from dataclasses import dataclass, fields
from typing import Optional

import torch

from kdsearch.core.errors import UserError
from kdsearch.data.augment import MixedLabels, Views, plain_views, training_batch
from kdsearch.data.dataset import Split
from kdsearch.engine.levers import make_ema, make_optimizer, make_schedule
from kdsearch.engine.losses import NEEDS_TEACHER, make_loss
from kdsearch.engine.networks import logits_of


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


def new_model(networks, role, seed, device, start=True):
    """A new network of `role` (teacher or student) of the study's networks.Networks, initialised by `seed`;
    start False: its starting weights not read, since stored ones replace them."""
    torch.manual_seed(seed)  # the same seed gives the same initial weights
    return networks.build(role, start).to(device, memory_format=torch.channels_last)


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
    teacher's logits for exactly those views (an (epochs, len(train), classes) tensor, float16 in a study's table,
    read as float32 by the step; a distillation loss requires it)."""
    train: Split
    views: Views
    val: Optional[Split] = None
    teacher_logits: Optional[torch.Tensor] = None


@dataclass
class RunState:
    """A run's whole training state, what its checkpoint holds: `model` is the weights evaluated (the average,
    with an EMA; then `raw` holds the running weights and `ema` the average's own state), the optimizer's and the
    schedule's states, the batch order's generator and the history so far. On disk a plain dict (to_dict), as
    torch.load(weights_only=True) reads nothing else."""
    model: dict
    optimizer: dict
    order: torch.Tensor
    scheduler: Optional[dict]
    history: list
    raw: Optional[dict] = None
    ema: Optional[dict] = None

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would copy every tensor


class _Training:
    """One run's moving parts: the model, its optimizer, schedule and EMA, the batch order and the history."""

    def __init__(self, model, recipe, seed):
        self.model, self.opt, self.ema = model, make_optimizer(model, recipe), make_ema(model, recipe.ema)
        self.sched = make_schedule(self.opt, recipe)
        self.scored = self.ema.module if self.ema is not None else model  # evaluated and kept: the average
        self.order = torch.Generator().manual_seed(seed)
        self.history = []

    def resume(self, state):
        self.model.load_state_dict(state.raw if self.ema is not None else state.model)
        if self.ema is not None:
            self.ema.load_state_dict(state.ema)
        self.opt.load_state_dict(state.optimizer)
        if self.sched is not None:
            self.sched.load_state_dict(state.scheduler)
        self.order.set_state(state.order)
        self.history = list(state.history)

    def state(self):
        ema = {"raw": self.model.state_dict(), "ema": self.ema.state_dict()} if self.ema is not None else {}
        return RunState(self.scored.state_dict(), self.opt.state_dict(), self.order.get_state(),
                        self.sched.state_dict() if self.sched is not None else None, self.history, **ema)

    def finish(self):
        if self.ema is not None:  # the caller's model becomes the average: the one stored, tested and distilled from
            self.model.load_state_dict(self.scored.state_dict())


def train(model, recipe, lesson, *, seed, report=None, resume=None):
    """Train `model` by `recipe` on `lesson` (a Lesson); return the per-epoch history.

    seed: batch order (the views stay the lesson's, which the teacher's logits hold).
    report(metrics, state): called after every epoch with {"epoch", "train_loss", "lr" (the epoch's),
    "loss_<part>" for each of the loss's parts (e.g. loss_hard, loss_soft), "val_acc", "time_s"} and a function
    that returns the run's whole state (a RunState: what a checkpoint holds). resume: such a state; training
    goes on from its epoch as if never stopped. With recipe.ema, `model` holds the average when training ends.
    A loss that turns NaN or infinite stops the run at once: its last metrics say "diverged": True.
    """
    loss_fn = make_loss(recipe)
    views, table = lesson.views, lesson.teacher_logits
    if recipe.loss in NEEDS_TEACHER and (table is None or len(table) < views.table_epochs(recipe.epochs)):
        raise ValueError(f"the {recipe.loss} loss needs teacher logits for every epoch's views")
    run = _Training(model, recipe, seed)
    if resume is not None:
        run.resume(resume)
    start = time.perf_counter() - (run.history[-1]["time_s"] if run.history else 0.0)
    for epoch in range(len(run.history), recipe.epochs):
        metrics, diverged = _epoch(run, recipe, lesson, loss_fn, epoch)
        metrics.update({"val_acc": evaluate(run.scored, lesson.val, views) if lesson.val is not None else None,
                        "time_s": time.perf_counter() - start, **({"diverged": True} if diverged else {})})
        run.history.append(metrics)
        if report is not None:
            report(metrics, run.state)
        if diverged:
            break
    run.finish()
    return run.history


def _epoch(run, recipe, lesson, loss_fn, epoch):
    """One epoch of `run`, the hot loop: its metrics but the validation, and whether the loss diverged."""
    train, views, model, opt = lesson.train, lesson.views, run.model, run.opt
    needs_teacher = recipe.loss in NEEDS_TEACHER
    model.train()
    lr = opt.param_groups[0]["lr"]  # this epoch's, before the schedule steps
    perm = torch.randperm(len(train), generator=run.order).to(train.x.device)
    total, sums, steps = torch.zeros((), device=train.x.device), {}, 0  # summed on the device: no sync per step
    for i in range(0, len(train), recipe.batch_size):
        idx = perm[i:i + recipe.batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a batch of one
            continue
        x, y = training_batch(train, idx, views, epoch)
        t = lesson.teacher_logits[views.epoch(epoch), idx] if needs_teacher else None
        loss, parts = train_step(model, opt, loss_fn, x, y, t, recipe.grad_clip)
        if run.ema is not None:
            run.ema.update_parameters(model)
        total += loss
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v
        steps += 1
        if steps % 25 == 0 and not torch.isfinite(total):  # a sync every 25 steps: a diverged run stops now
            break
    if run.sched is not None:
        run.sched.step()
    steps = max(steps, 1)
    metrics = {"epoch": epoch + 1, "train_loss": total.item() / steps, "lr": lr,
               **{f"loss_{k}": float(v) / steps for k, v in sums.items()}}
    return metrics, not torch.isfinite(total).item()


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
