"""Whether a study can work, said after the engine phase and before the search spends its trials on it.

A new user's first study can be hopeless without an error anywhere: a torchvision teacher trained from random
weights for 3 epochs on 2,000 images stayed at chance, and the search still ran, reported, and registered its
student as champion. Each finding is one line (in the log and the report): a teacher no better than chance
(it stops the search unless search.stop_at_chance is false), a teacher no better than student_ce (distilling it
cannot help), a recipe with too few optimizer steps an epoch, a run whose validation accuracy stayed flat.
"""
import math
from dataclasses import dataclass
from typing import Optional

from kdsearch.core.errors import UserError
from kdsearch.core.names import BASELINES, BEST

MIN_STEPS = 20  # optimizer steps an epoch below which a few epochs barely move the weights (batch 256 on 1,237
# images gives 5)


@dataclass(frozen=True)
class Finding:
    """One reason the study may not work: its kind (teacher_at_chance, teacher_not_better, few_steps, flat,
    student_at_chance), its line, whether it stops the search, and the row it is about (a model's name)."""
    kind: str
    line: str
    stops: bool = False
    model: Optional[str] = None


def chance(classes, images):
    """(chance accuracy, two standard errors of an accuracy at chance over `images` images), in points."""
    p = 1 / classes
    return 100 * p, 200 * math.sqrt(p * (1 - p) / max(images, 1))


def at_chance(acc, classes, images):
    """Whether an accuracy over `images` images is within two standard errors of chance (or below it)."""
    level, margin = chance(classes, images)
    return acc <= level + margin


def findings(study, phase, train_images, val_images, classes):
    """The Findings of a study's engine phase (`phase`: baselines.EnginePhase) on `train_images` training and
    `val_images` validation images of `classes` classes."""
    out = []
    teacher, ce = phase.teacher, phase.baselines["student_ce"]
    level, margin = chance(classes, val_images)
    if at_chance(teacher.val_acc, classes, val_images):
        out.append(Finding("teacher_at_chance", (
            f"the teacher scores {teacher.val_acc:.2f}% on validation, no better than chance ({level:.1f}% +- "
            f"{margin:.1f} over {val_images} images): distilling it can only teach noise; fix: train it longer or "
            f"from pretrained weights (teacher.epochs, models.teacher.weights), or set search.stop_at_chance: "
            f"false to search anyway"), stops=study.search.stop_at_chance, model="teacher"))
    elif teacher.val_acc <= ce.val_acc:
        out.append(Finding("teacher_not_better", (
            f"the teacher ({teacher.val_acc:.2f}% on validation) is no better than student_ce "
            f"({ce.val_acc:.2f}%): distilling it cannot help the student; fix: a stronger teacher (longer, "
            f"pretrained, a larger network)"), model="teacher"))
    out += few_steps(study, train_images)
    for run in [teacher, *phase.baselines.values()]:
        accs = [h["val_acc"] for h in run.history]
        if len(accs) >= 3 and max(accs) - min(accs) <= margin:
            out.append(Finding("flat", (
                f"{run.model}: validation accuracy flat over its {len(accs)} epochs ({min(accs):.2f}% to "
                f"{max(accs):.2f}%): it learned nothing after its first epoch; fix: check its lr and epochs, and "
                f"the data"), model=run.model))
    return out


def few_steps(study, train_images):
    """A Finding per recipe (the teacher's, each baseline's, the space's largest batch) with fewer than
    MIN_STEPS optimizer steps an epoch."""
    batches = {"teacher": study.teacher.batch_size, **{n: getattr(study.baselines, n).batch_size for n in BASELINES}}
    p = study.space.get("batch_size")
    if p is not None:
        batches["the space's largest batch_size"] = int(max(p.values) if p.type == "choice" else p.high)
    out = []
    for name, batch in batches.items():
        steps = math.ceil(train_images / batch)
        if steps < MIN_STEPS:
            out.append(Finding("few_steps", (
                f"{name}: {steps} optimizer steps an epoch (batch {batch} over {train_images} training images), "
                f"fewer than {MIN_STEPS}: a few epochs barely move the weights; fix: lower its batch_size, or "
                f"give more images or epochs")))
    return out


def check_study(ctx, phase):
    """The Findings of the study `ctx` after its engine phase, each logged as one line; a UserError (exit 2) with
    the first that stops the search."""
    found = findings(ctx.study, phase, len(ctx.data.train), len(ctx.data.val), len(ctx.data.classes))
    for f in found:
        ctx.log(f"check: {f.line}")
    stop = next((f for f in found if f.stops), None)
    if stop is not None:
        raise UserError(stop.line)
    return found


def best_at_chance(rows, val_images, classes):
    """A Finding for each winner (kd_best, ce_best) whose mean validation accuracy is no better than chance: such
    a student is never made champion."""
    level, margin = chance(classes, val_images)
    return [Finding("student_at_chance", (
        f"{r['model']} scores {r['val_acc']:.2f}% on validation, no better than chance ({level:.1f}% +- "
        f"{margin:.1f}): it is registered, but not as champion"), model=r["model"])
        for r in rows if r["model"] in BEST.values() and at_chance(r["val_acc"], classes, val_images)]
