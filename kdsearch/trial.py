"""One search trial (or confirmation run) as a plain function call, and the rule for a trial stopped early.

A trial is a KD training of the student with the searched values over kd_reference's recipe, each epoch handed
to a report callback; a confirmation run is the same with another seed. No Ray here: tuner.py and confirm.py
call it in Ray's workers."""
import time
import warnings

import torch

from .config import Recipe
from .data import to_split
from .engine import new_model, set_threads, train


def trial_state(result, error=False):
    """The one rule for how a trial ended, from its last result: failed (it raised, or reported nothing),
    diverged (its loss became NaN or infinite), pruned (a scheduler stopped it: it ran fewer epochs than its
    config asked for, and a trial that ends on its own reaches its last epoch) or completed."""
    if error or not result:
        return "failed"
    if result.get("diverged"):
        return "diverged"
    return "pruned" if result.get("epoch", 0) < result.get("epochs", 0) else "completed"


def error_line(text):
    """The first line of an error as a user reads it: the exception's last traceback line, e.g. `ValueError: x`."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip() and not ln.startswith((" ", "Failure #"))]
    return (lines[-1] if lines else str(text).strip())[:300]


def kd_trial(config, *, train_x, train_y, val_x, val_y, logits, base, seed, threads, device, num_classes,
             report=None, view_seed=None, resume=None):
    """Train a model by Recipe(**base, **config) on NHWC uint8 arrays and the teacher's logit table (numpy);
    return (history, model).

    seed: initialisation and batch order; view_seed (default: seed): the study's seed, which fixes the augmented
    views and so the logit table. report(metrics, state) is called after every epoch; metrics are the engine's
    plus `epochs` (what the config asked for: see `trial_state`), `train_start` and `wall` (time.time(), for
    the search's timings); state() is the run's whole state (engine.train), and `resume` such a state to go on
    from.
    """
    set_threads(threads)
    device = torch.device(device)
    with warnings.catch_warnings():  # object-store arrays are read-only; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        train_split, val_split = to_split(train_x, train_y, device), to_split(val_x, val_y, device)
        table = torch.from_numpy(logits).to(device)
    recipe = Recipe(**{**base, **config})
    model = new_model(recipe.model, num_classes, seed, device)
    start = time.time()

    def on_epoch(m, state):
        if report is not None:
            report({**m, "epochs": recipe.epochs, "train_start": start, "wall": time.time()}, state)

    history = train(model, recipe, train_split, seed=seed, view_seed=seed if view_seed is None else view_seed,
                    val=val_split, teacher_logits=table, report=on_epoch, resume=resume)
    return history, model
