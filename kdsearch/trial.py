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


def stopped_early(result):
    """The one rule for a trial a scheduler stopped: its last result ran fewer epochs than its config asked for
    (a trial that ends on its own always reaches its last epoch)."""
    return bool(result) and result.get("epoch", 0) < result.get("epochs", 0)


def kd_trial(config, *, train_x, train_y, val_x, val_y, logits, base, seed, threads, device, num_classes,
             report=None, view_seed=None):
    """Train a model by Recipe(**base, **config) on NHWC uint8 arrays and the teacher's logit table (numpy);
    return (history, model).

    seed: initialisation and batch order; view_seed (default: seed): the study's seed, which fixes the augmented
    views and so the logit table. report(metrics, model) is called after every epoch; metrics are the engine's
    plus `epochs` (what the config asked for: see `stopped_early`), `train_start` and `wall` (time.time(), for
    the search's timings).
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

    def on_epoch(m):
        if report is not None:
            report({**m, "epochs": recipe.epochs, "train_start": start, "wall": time.time()}, model)

    history = train(model, recipe, train_split, seed=seed, view_seed=seed if view_seed is None else view_seed,
                    val=val_split, teacher_logits=table, report=on_epoch)
    return history, model
