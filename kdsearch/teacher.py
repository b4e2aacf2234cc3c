"""The teacher, once per study, and its logit table for every augmented view the KD runs will see.

The teacher is trained (or loaded from a checkpoint) and cached; its logits are computed once and shared.

Because the view of image i in epoch e depends only on (study seed, e, i) (augment.py), the table
logits[e, i] = teacher(view(seed, e, i)) is exact for every KD run of the study, whatever its batch order. The
teacher's cost per study is therefore one training plus (max epochs) inference passes over the training split.
"""
import hashlib
import time
from pathlib import Path

import torch

from .augment import augmented_views
from .config import key_fields
from .engine import evaluate, new_model, predict
from .errors import UserError
from .losses import NEEDS_TEACHER
from .models import count_params
from .runs import log_stderr, train_or_load
from .store import make_key


def get_teacher(recipe, seed, data, store, log=log_stderr):
    """Return (teacher, row, key) on the data's device: from recipe.checkpoint if given, else trained once by
    `recipe` and cached."""
    if recipe.checkpoint:
        path = Path(recipe.checkpoint).expanduser()
        model = load_checkpoint(path, recipe.model, len(data.classes), data.train.x.device)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        key = make_key("checkpoint", digest, data.key)
        stored = store.load_run("teacher", key)
        if stored is None:
            row = {"model": "teacher", "key": key, "params": count_params(model), "val_acc": evaluate(model, data.val),
                   "test_acc": evaluate(model, data.test), "train_s": 0.0, "history": [],
                   "config": {"checkpoint": str(path)}}
            store.save_run("teacher", key, model, row)
            log(f"teacher: loaded {path} (val {row['val_acc']:.2f}%)")
        else:
            row = stored[1]
        return model, {**row, "cached": True}, key
    fields = {k: v for k, v in key_fields(recipe).items() if k != "checkpoint"}
    key = make_key("teacher", fields, data.key, seed)
    model, row = train_or_load(store, "teacher", key, "teacher", recipe, data, seed=seed, log=log)
    return model, row, key


def load_checkpoint(path, model_name, num_classes, device):
    """Load a state_dict saved with torch.save(model.state_dict(), path), with weights_only=True."""
    fix = f"give a {model_name} state_dict saved with torch.save(model.state_dict(), path) as teacher.checkpoint"
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist; fix: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a file that is not a checkpoint; all mean the same
        first_line = (str(e).splitlines() or [""])[0][:100]
        raise UserError(f"teacher checkpoint {path} cannot be read ({type(e).__name__}: {first_line}); "
                        f"fix: {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"teacher checkpoint {path} is not a state_dict of tensors; fix: {fix}")
    model = new_model(model_name, num_classes, 0, device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise UserError(f"teacher checkpoint {path} does not fit {type(model).__name__} with {num_classes} classes "
                        f"({detail[:200]}); fix: {fix}") from None
    return model


def logit_epochs(baselines, space):
    """Epochs of the study's logit table: the longest run that reads it, baseline or trial."""
    kd = [r.epochs for r in vars(baselines).values() if r.loss in NEEDS_TEACHER]
    return max(kd + [space_epochs(space, baselines.kd_reference)])


def space_epochs(space, kd_reference):
    """The longest a trial can run: the space's largest epoch count, or kd_reference's when not searched."""
    p = space.get("epochs")
    if p is None:
        return kd_reference.epochs
    return int(max(p.values) if p.type == "choice" else p.high)


def teacher_logits(teacher, teacher_key, data, seed, epochs, store, log=log_stderr):
    """(epochs, N_train, classes) float32 teacher logits of every augmented view, on the data's device."""
    key = make_key("logits", teacher_key, data.key, seed, epochs)
    table = store.load_tensor("logits", key)
    if table is None:
        start = time.perf_counter()
        table = torch.stack([predict(teacher, data.train.x, views=lambda idx, e=e: augmented_views(
            data.train.x, idx, seed, e)) for e in range(epochs)])
        store.save_tensor("logits", key, table)
        log(f"teacher logits: {epochs} epochs x {len(data.train)} views in {time.perf_counter() - start:.0f} s")
    return table.to(data.train.x.device)
