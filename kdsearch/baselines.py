"""A study's engine phase: its data, the teacher, the teacher's logit table and the fixed baselines (the
notebook's MSE student, a CE student and KD with the notebook's settings), each made once and stored."""
import dataclasses
import time
from pathlib import Path

from .data import load_arrays, prepare
from .errors import UserError
from .engine import set_threads
from .losses import NEEDS_TEACHER
from .runs import log_stderr, train_or_load
from .store import Store, make_key
from .teacher import get_teacher, logit_epochs, teacher_logits

BASELINES = ("student_mse", "student_ce", "kd_reference")


def open_study(study, results, device, log=log_stderr):
    """Threads, data (decoded once, cached under <results>/cache, then on `device`) and the store of a study."""
    threads = set_threads(study.threads)
    cache = Path(results) / "cache"
    start = time.perf_counter()
    arrays = load_arrays(study.data.source, study.data.path, cache)
    load_s = time.perf_counter() - start
    val_size, subset = study.data.val_size, study.data.train_subset
    if val_size + (subset or 1) > len(arrays.train_y):
        raise UserError(f"data.val_size ({val_size}) + data.train_subset ({subset}) exceed the {len(arrays.train_y)} "
                        f"training images of {study.data.path}; fix: lower them in the study file")
    data = prepare(arrays, val_size, subset, study.seed, device)
    log(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.classes)} classes (loaded in {load_s:.1f} s), on {device}, {threads} CPU threads")
    return data, Store(cache)


def run_key(recipe, data, seed, teacher_key=None):
    """Everything that determines a student run; runs that read the teacher also depend on it."""
    return make_key("run", dataclasses.asdict(recipe), data.key, seed,
                    teacher_key if recipe.loss in NEEDS_TEACHER else None)


def run_baselines(study, data, store, log=log_stderr, need_table=False):
    """Train (or reuse) the teacher and the fixed baselines. Returns (rows, table): one row per model, teacher
    first, and the teacher's logit table for every KD run of the study, made (or read) once: when a KD baseline
    trains, or when `need_table` (a search); else None."""
    teacher, row, tkey = get_teacher(study.teacher, study.seed, data, store, log)
    rows, table = [row], None
    epochs = logit_epochs(study.baselines, study.space)
    for name in BASELINES:
        recipe = getattr(study.baselines, name)
        key = run_key(recipe, data, study.seed, tkey)
        if recipe.loss in NEEDS_TEACHER and table is None and not store.has_run("runs", key):
            table = teacher_logits(teacher, tkey, data, study.seed, epochs, store, log)
        _, info = train_or_load(store, "runs", key, name, recipe, data, seed=study.seed, teacher_logits=table,
                                log=log)
        rows.append(info)
    if need_table and table is None:
        table = teacher_logits(teacher, tkey, data, study.seed, epochs, store, log)
    return rows, table
