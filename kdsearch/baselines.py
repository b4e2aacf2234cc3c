"""The fixed baselines of a study: the teacher, the notebook's MSE student, a CE student and KD with the
notebook's settings. Each is trained once and stored; the next run of the same study reads them back."""
import dataclasses
import json
import time
from pathlib import Path

from .data import load_arrays
from .errors import UserError
from .engine import pick_device, prepare, set_threads
from .runs import log_stderr, train_or_load
from .store import Store, make_key
from .teacher import get_teacher, logit_epochs, teacher_logits

BASELINES = ("student_mse", "student_ce", "kd_reference")
NOTEBOOK_TEST_ACC = {"teacher": 88.77, "student_mse": 65.59, "kd_reference": 76.84}  # its (test-set-tuned) table


def open_study(study, results, log=log_stderr):
    """Threads, device, data (decoded once, cached under <results>/cache) and the store, for one study."""
    threads = set_threads(study.threads)
    device = pick_device(study.device)
    cache = Path(results) / "cache"
    start = time.perf_counter()
    arrays = load_arrays(study.data.source, study.data.path, cache)
    load_s = time.perf_counter() - start
    val_size = study.data.val_size
    subset = study.data.train_subset
    if val_size + (subset or 1) > len(arrays.train_y):
        raise UserError(f"data.val_size ({val_size}) + data.train_subset ({subset}) exceed the {len(arrays.train_y)} "
                        f"training images of {study.data.path}; fix: lower them in the study file")
    data = prepare(arrays, val_size, subset, study.seed, device)
    log(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.classes)} classes (loaded in {load_s:.1f} s), on {device}, {threads} CPU threads")
    return data, Store(cache), device


def run_key(recipe, data, seed, teacher_key=None):
    """Everything that determines a student run; KD runs also depend on the teacher."""
    return make_key("run", dataclasses.asdict(recipe), data.key, seed, teacher_key if recipe.loss == "kd" else None)


def run_baselines(study, data, store, device, log=log_stderr):
    """Train (or reuse) the teacher and the fixed baselines. Returns (rows, teacher, teacher_key): one info dict
    per model, teacher first."""
    teacher, tinfo, tkey = get_teacher(study, data, store, device, log)
    rows = [tinfo]
    recipes = {name: getattr(study.baselines, name) for name in BASELINES}
    logits = None
    for name, recipe in recipes.items():
        key = run_key(recipe, data, study.seed, tkey)
        if recipe.loss == "kd" and logits is None and not store.has_run("runs", key):
            logits = teacher_logits(teacher, tkey, data, study.seed, logit_epochs(study), store, log)
        model, info = train_or_load(store, "runs", key, name, recipe, data, seed=study.seed, device=device,
                                    teacher_logits=logits, log=log)
        rows.append({**info, "name": name})
    return rows, teacher, tkey


def format_table(rows, times=True):
    """The models table: rows need name (or model), params, val_acc, test_acc, and train_s when `times`."""
    head = f"{'model':<14}{'params':>11}{'val acc':>10}{'test acc':>10}{'notebook':>10}"
    head += f"{'train time':>12}" if times else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.get("name") or r["model"]
        ref = NOTEBOOK_TEST_ACC.get(name)
        line = (f"{name:<14}{r['params']:>11,}{r['val_acc']:>9.2f}%{r['test_acc']:>9.2f}%"
                f"{(f'{ref:.2f}%' if ref else '-'):>10}")
        if times:
            line += f"{r['train_s']:>10.1f} s" + ("  (stored)" if r.get("cached") else "")
        lines.append(line)
    return "\n".join(lines)


def write_baselines(rows, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = ("name", "params", "val_acc", "test_acc", "train_s", "recipe", "history", "key")
    (folder / "baselines.json").write_text(json.dumps([{k: r.get(k) for k in keep} for r in rows], indent=1))
    (folder / "baselines.md").write_text("```\n" + format_table(rows) + "\n```\n")
