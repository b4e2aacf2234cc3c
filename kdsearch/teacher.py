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
from .errors import UserError, first_line
from .losses import NEEDS_TEACHER
from .models import count_params
from .names import BASELINES
from .runs import Run, RunSpec, train_or_load
from .space import space_epochs
from .store import make_key


def get_teacher(ctx):
    """Return (teacher, Run) on the data's device: from teacher.checkpoint if the study gives one (loaded into
    the study's teacher network, used as given), else trained once by the study's teacher recipe and cached. The
    Run's key is the teacher's: every KD run's key holds it."""
    recipe, data, store = ctx.study.teacher, ctx.data, ctx.store
    if recipe.checkpoint:
        path = Path(recipe.checkpoint).expanduser()
        model = load_teacher_checkpoint(path, ctx.networks, data.train.x.device)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        key = make_key("checkpoint", digest, ctx.networks.teacher.key, data.key, ctx.views.key)
        stored = store.load_run("teacher", key)
        if stored is not None:
            return model, Run.from_json(stored[1], cached=True)
        run = Run(model="teacher", key=key, params=count_params(model), val_acc=evaluate(model, data.val, ctx.views),
                  test_acc=evaluate(model, data.test, ctx.views), train_s=0.0, history=[],
                  config={"checkpoint": str(path)}, cached=True)  # used as given: nothing trained
        store.save_run("teacher", key, model, run.to_json())
        ctx.log(f"teacher: loaded {path} (val {run.val_acc:.2f}%)")
        return model, run
    fields = {k: v for k, v in key_fields(recipe).items() if k != "checkpoint"}
    key = make_key("teacher", fields, ctx.networks.teacher.key, data.key, ctx.views.key, ctx.study.seed)
    return train_or_load(ctx, RunSpec("teacher", recipe, ctx.study.seed, key, kind="teacher"))


def load_teacher_checkpoint(path, networks, device):
    """The study's teacher network (networks.Networks) with a state_dict saved by torch.save(model.state_dict(),
    path), read with weights_only=True. Missing or unexpected keys and shape mismatches are one line naming the
    first few."""
    spec = networks.teacher.spec
    fix = f"give a state_dict of {spec} for {networks.num_classes} classes as teacher.checkpoint"
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist; fix: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a file that is not a checkpoint; all mean the same
        raise UserError(f"teacher checkpoint {path} cannot be read ({first_line(e, 150)}); fix: {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"teacher checkpoint {path} is not a state_dict of tensors; fix: {fix}")
    model = new_model(networks, "teacher", 0, device)
    wanted = model.state_dict()
    wrong = [_listed("missing", [k for k in wanted if k not in state]),
             _listed("unexpected", [k for k in state if k not in wanted]),
             _listed("of another shape", [f"{k} {tuple(state[k].shape)} (not {tuple(v.shape)})"
                                          for k, v in wanted.items() if k in state and state[k].shape != v.shape])]
    wrong = [w for w in wrong if w]
    if wrong:
        raise UserError(f"teacher checkpoint {path} does not fit {spec} with {networks.num_classes} classes: "
                        f"{'; '.join(wrong)}; fix: {fix}")
    model.load_state_dict(state)
    return model


def _listed(what, keys, first=3):
    if not keys:
        return ""
    more = f" and {len(keys) - first} more" if len(keys) > first else ""
    return f"{len(keys)} key(s) {what}: {', '.join(keys[:first])}{more}"


def logit_epochs(study):
    """Epochs of the study's logit table: the longest run that reads it, baseline or trial."""
    kd = [r.epochs for r in (getattr(study.baselines, n) for n in BASELINES) if r.loss in NEEDS_TEACHER]
    return max(kd + [space_epochs(study.space, study.baselines.kd_reference)])


def logit_table(ctx, teacher, teacher_key, epochs):
    """(epochs, N_train, classes) float32 teacher logits of every augmented view, on the data's device; computed
    once and stored."""
    data, views = ctx.data, ctx.views
    key = make_key("logits", teacher_key, data.key, views.key, epochs)
    table = ctx.store.load_tensor("logits", key)
    if table is None:
        start = time.perf_counter()
        table = torch.stack([predict(teacher, data.train.x, lambda idx, e=e: augmented_views(
            data.train.x, idx, views, e)) for e in range(epochs)])
        ctx.store.save_tensor("logits", key, table)
        ctx.log(f"teacher logits: {epochs} epochs x {len(data.train)} views in {time.perf_counter() - start:.0f} s")
    return table.to(data.train.x.device)
