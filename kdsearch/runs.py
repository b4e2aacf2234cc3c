"""One model trained by a recipe, or read back from the store when the same run was done before."""
import dataclasses
import sys
import time

from .errors import UserError
from .engine import evaluate, new_model, train
from .models import count_params


def log_stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def train_or_load(store, kind, key, name, recipe, data, *, seed, teacher_logits=None, log=log_stderr):
    """Return (model, row), on the data's device. row: model (the name), key, params, val_acc, test_acc, train_s,
    history, config (the recipe), cached. teacher_logits: a function that returns the teacher's logit table,
    called only when the run is trained (a stored run needs none).

    The test accuracy is measured once, right after training, and stored with the run: nothing is ever chosen
    by it (searches compare validation accuracy).
    """
    model = new_model(recipe.model, len(data.classes), seed, data.train.x.device)
    stored = store.load_run(kind, key)
    if stored is not None:
        model.load_state_dict(stored[0])
        log(f"{name}: reusing the stored run {kind}/{key} (val {stored[1]['val_acc']:.2f}%)")
        return model, {**stored[1], "cached": True}
    log(f"{name}: training {recipe.model} with {recipe.loss} for {recipe.epochs} epochs on {len(data.train)} images")

    def report(m, state):
        log(f"{name}: epoch {m['epoch']}/{recipe.epochs} loss {m['train_loss']:.4f} val {m['val_acc']:.2f}% "
            f"({m['time_s']:.0f} s)")

    start = time.perf_counter()
    history = train(model, recipe, data.train, seed=seed, view_seed=seed, val=data.val,
                    teacher_logits=teacher_logits() if teacher_logits else None, report=report)
    if history[-1].get("diverged"):
        raise UserError(f"{name} diverged in epoch {len(history)} (its loss became NaN or infinite) with lr "
                        f"{recipe.lr}; fix: lower {name}'s lr in the study file")
    row = save_run(store, kind, key, name, model, dataclasses.asdict(recipe), history,
                   evaluate(model, data.test), time.perf_counter() - start)
    return model, {**row, "cached": False}


def save_run(store, kind, key, name, model, config, history, test_acc, train_s, **extra):
    """Store a trained model with its row (the one row schema: model, key, params, val_acc, test_acc, train_s,
    history, config); return the row."""
    row = {"model": name, "key": key, "params": count_params(model), "val_acc": history[-1]["val_acc"],
           "test_acc": test_acc, "train_s": train_s, "history": history, "config": config, **extra}
    store.save_run(kind, key, model, row)
    return row
