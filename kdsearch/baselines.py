"""A study's engine phase: its data, the teacher, the teacher's logit table and the fixed baselines.

The baselines are the notebook's MSE student, a CE student and KD with the notebook's settings; each is made
once and stored."""
import time
from pathlib import Path

from .config import key_fields
from .data import load_arrays, prepare
from .errors import UserError
from .engine import set_threads
from .losses import NEEDS_TEACHER
from .runs import log_stderr, train_or_load
from .store import Store, make_key
from .teacher import get_teacher, logit_epochs, teacher_logits

BASELINES = ("student_mse", "student_ce", "kd_reference")


def open_study(cfg, seed, threads, device, results, log=log_stderr):
    """Threads, data (`cfg`: the study's data section; decoded once, cached under <results>/cache, then held on
    `device`) and the store of a study."""
    threads = set_threads(threads)
    cache = Path(results) / "cache"
    start = time.perf_counter()
    arrays = load_arrays(cfg.source, cfg.path, cache)
    load_s = time.perf_counter() - start
    if cfg.val_size + (cfg.train_subset or 1) > len(arrays.train_y):
        raise UserError(f"data.val_size ({cfg.val_size}) + data.train_subset ({cfg.train_subset}) exceed the "
                        f"{len(arrays.train_y)} training images of {cfg.path}; fix: lower them in the study file")
    data = prepare(arrays, cfg.val_size, cfg.train_subset, seed, device)
    log(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.classes)} classes (loaded in {load_s:.1f} s), on {device}, {threads} CPU threads")
    return data, Store(cache, log)


def run_key(recipe, data, seed, teacher_key=None):
    """Everything that determines a student run; runs that read the teacher also depend on it."""
    return make_key("run", key_fields(recipe), data.key, seed,
                    teacher_key if recipe.loss in NEEDS_TEACHER else None)


def run_baselines(teacher_recipe, baselines, space, seed, data, store, log=log_stderr, need_table=False):
    """Train (or reuse) the teacher and the fixed baselines. Returns (rows, table): one row per model, teacher
    first, and the teacher's logit table for every KD run of the study (the space's longest trial included),
    made (or read) once: when a KD baseline trains, or when `need_table` (a search); else None."""
    teacher, row, tkey = get_teacher(teacher_recipe, seed, data, store, log)
    rows, made = [row], []
    epochs = logit_epochs(baselines, space)

    def table():  # made (or read) at the first need only: a stored KD baseline needs none
        if not made:
            made.append(teacher_logits(teacher, tkey, data, seed, epochs, store, log))
        return made[0]

    for name in BASELINES:
        recipe = getattr(baselines, name)
        key = run_key(recipe, data, seed, tkey)
        _, info = train_or_load(store, "runs", key, name, recipe, data, seed=seed, log=log,
                                teacher_logits=table if recipe.loss in NEEDS_TEACHER else None)
        rows.append(info)
    return rows, (table() if need_table or made else None)
