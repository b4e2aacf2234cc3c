"""`kdsearch precision`: the float16 logit table's error in each distillation loss and in the gradient of the
student's weights, measured on a study's own teacher and its kd_reference student (both trained, or read from
the store as `kdsearch baselines` left them) on the views of the table's first and last epochs.

Each loss is measured by its soft terms alone (alpha 0: the hard-label term reads no teacher and is exact), the
worst case for its relative error, at temperatures 1 to 8 and at kd_reference's own recipe. Why float16 and why
measured: engine/precision.py.
"""
import dataclasses
import json
import time
from dataclasses import asdict

import torch

from kdsearch.data.augment import augmented_views
from kdsearch.engine.losses import LOSSES, NEEDS_TEACHER, make_loss
from kdsearch.engine.networks import logits_of
from kdsearch.engine.precision import TABLE_DTYPE, half_table_error
from kdsearch.phase.baselines import LogitTables, run_key
from kdsearch.phase.runs import RunSpec, train_or_load
from kdsearch.phase.teacher import get_teacher
from kdsearch.tools.evidence import evidence

TEMPERATURES = (1.0, 2.0, 4.0, 8.0)


def measure(ctx, images=2048):
    """The figures of `kdsearch precision` for the study `ctx`, on its first `images` training images."""
    recipe, data, seed = ctx.study.baselines.kd_reference, ctx.data, ctx.study.seed
    teacher, teacher_run = get_teacher(ctx)
    table = LogitTables(ctx, teacher, teacher_run.key, recipe.epochs)
    student, _ = train_or_load(ctx, RunSpec("kd_reference", recipe, seed, run_key(ctx, recipe, seed, teacher_run.key)),
                               table)
    views, fed, n = ctx.views_of("none"), ctx.views_of("none", role="teacher"), min(images, len(data.train))
    epochs = sorted({0, views.epoch(recipe.epochs - 1)})
    batches = []
    teacher.eval()
    for epoch in epochs:
        for i in range(0, n, recipe.batch_size):
            idx = torch.arange(i, min(i + recipe.batch_size, n), device=data.train.x.device)
            x = augmented_views(data.train.x, idx, views, epoch)
            with torch.no_grad():  # the teacher sees the same views normalised its own way (StudyContext.fed)
                t = logits_of(teacher(augmented_views(data.train.x, idx, fed, epoch))).float()
            batches.append((x, data.train.y[idx], t))
    t = torch.cat([b[2] for b in batches])
    loss_fns = [(f"{name} T={T:g}, soft terms alone", make_loss(dataclasses.replace(
                    recipe, loss=name, temperature=T, alpha=0.0, beta=None, gamma=None)))
                for name in LOSSES if name in NEEDS_TEACHER for T in TEMPERATURES]
    loss_fns.append((f"kd_reference ({recipe.loss} T={recipe.temperature:g} alpha={recipe.alpha:g})",
                     make_loss(recipe)))
    start = time.perf_counter()
    errors = half_table_error(student, batches, loss_fns)
    return {"evidence": {**evidence(data.train.x.device, torch.get_num_threads()), "images": n, "epochs": epochs,
                         "batches": len(batches), "batch_size": recipe.batch_size,
                         "seconds": round(time.perf_counter() - start, 1)},
            "study": ctx.study.name, "teacher_val_acc": teacher_run.val_acc,
            "logit_max_abs": t.abs().max().item(),
            "rounding_max_abs": (t.to(TABLE_DTYPE).float() - t).abs().max().item(),
            "errors": [asdict(e) for e in errors]}


def format_precision(out):
    """The figures as a table, with their evidence."""
    ev = out["evidence"]
    lines = [f"float16 logit table against float32, study {out['study']}: teacher (val {out['teacher_val_acc']:.2f}%) "
             f"logits up to {out['logit_max_abs']:.2f} in magnitude, rounded by at most {out['rounding_max_abs']:.2g}",
             f"{ev['images']:,} views x epochs {ev['epochs']}, {ev['batches']} batches of {ev['batch_size']}, student "
             f"kd_reference; {ev['device']}, torch {ev['torch']}, commit {ev['git_commit']}, {ev['date']}",
             f"{'loss':<44}{'loss rel. err mean / max':>26}{'grad rel. err mean / max':>26}"]
    for e in out["errors"]:
        lines.append(f"{e['name']:<44}{e['loss_mean']:>12.1e} / {e['loss_max']:<11.1e}"
                     f"{e['grad_mean']:>12.1e} / {e['grad_max']:.1e}")
    return "\n".join(lines)


def write_json(out, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
