"""The teacher, once per study, and its logit table for every augmented view the KD runs will see.

The teacher is trained (or loaded from a checkpoint) and cached; its logits are computed once and shared.

Because the view of image i in epoch e depends only on (study seed, e, i) (augment.py), the table
logits[e, i] = teacher(view(seed, e, i)) is exact for every KD run of the study, whatever its batch order. The
teacher's cost per study is therefore one training plus (max epochs) inference passes over the training split,
per mixing the study's KD runs use (none, mixup, cutmix: each sees other views, so each has its own table).

A table is epochs x N_train x classes logits in float16 (engine/precision.py: the error that makes in the KD
losses and their gradients, measured): 45,000 images x 10 classes is 0.9 MB per epoch, 360 MB at 400 epochs, held
once per trial process on a GPU. augment.period bounds it: epoch e shows epoch e % period's views, and the table
holds `period` epochs (100: 90 MB), however long the runs.
"""
import hashlib
import time
from pathlib import Path

import torch

from kdsearch.core.names import BASELINES
from kdsearch.core.progress import progress
from kdsearch.core.records import Run
from kdsearch.data.augment import augmented_views
from kdsearch.engine.loop import evaluate, predict
from kdsearch.engine.losses import NEEDS_TEACHER
from kdsearch.engine.models import count_params
from kdsearch.engine.netcheck import load_teacher_checkpoint
from kdsearch.engine.precision import TABLE_DTYPE
from kdsearch.phase.runs import RunSpec, train_or_load
from kdsearch.phase.store import make_key
from kdsearch.study.schema import key_fields
from kdsearch.study.space import space_epochs

TABLE_FORMAT = str(TABLE_DTYPE).removeprefix("torch.")  # in the keys of the tables and of the runs that read them


def get_teacher(ctx):
    """Return (teacher, Run) on the data's device: from teacher.checkpoint if the study gives one (loaded into
    the study's teacher network, used as given), else trained once by the study's teacher recipe and cached. The
    Run's key is the teacher's: every KD run's key holds it."""
    recipe, data, store = ctx.study.teacher, ctx.data, ctx.store
    if recipe.checkpoint:
        path = Path(recipe.checkpoint).expanduser()
        model, views = load_teacher_checkpoint(path, ctx.networks, data.train.x.device), ctx.fed("teacher")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        key = make_key("checkpoint", digest, ctx.networks.teacher.key, data.key,
                       ctx.views_of("none", repeat=False, role="teacher").key)
        stored = store.load_run("teacher", key)
        if stored is not None:
            return model, stored.run
        run = Run(model="teacher", key=key, params=count_params(model), val_acc=evaluate(model, data.val, views),
                  test_acc=evaluate(model, data.test, views), train_s=0.0, history=[],
                  config={"checkpoint": str(path)}, cached=True)  # used as given: nothing trained
        store.save_run("teacher", key, model, run.to_json())
        ctx.log(f"teacher: loaded {path} (val {run.val_acc:.2f}%)")
        return model, run
    fields = {k: v for k, v in key_fields(recipe).items() if k != "checkpoint"}
    key = make_key("teacher", fields, ctx.networks.teacher.key, data.key, ctx.views_of(recipe.mix, repeat=False, role="teacher").key,
                   ctx.study.seed)
    return train_or_load(ctx, RunSpec("teacher", recipe, ctx.study.seed, key, kind="teacher"))


def logit_epochs(study):
    """Epochs of the study's logit table: the longest run that reads it, baseline or trial."""
    kd = [r.epochs for r in (getattr(study.baselines, n) for n in BASELINES) if r.loss in NEEDS_TEACHER]
    return max(kd + [space_epochs(study.space, study.baselines.kd_reference)])


def logit_mixes(study):
    """The mixings (Recipe.mix) of the study's KD runs, baselines and trials: one logit table each."""
    kd = [r.mix for r in (getattr(study.baselines, n) for n in BASELINES) if r.loss in NEEDS_TEACHER]
    p = study.space.get("mix")
    return list(dict.fromkeys(kd + (p.values if p is not None else [study.baselines.kd_reference.mix])))


def logit_table(ctx, teacher, teacher_key, epochs, mix="none"):
    """(rows, N_train, classes) float16 (TABLE_DTYPE) teacher logits of every augmented view (mixed by `mix`) of runs of up to
    `epochs` epochs, on the data's device: rows = epochs, or augment.period when shorter. Computed once and
    stored. Row e depends on (seed, epoch e, image) alone, so a stored longer table of the same views serves a
    shorter one (its first rows), and a stored shorter one is extended by the rows it lacks. The teacher sees
    each view normalised as its weights expect (StudyContext.fed)."""
    data, views = ctx.data, ctx.views_of(mix, role="teacher")
    rows = views.table_epochs(epochs)
    views_key = make_key("logits", teacher_key, data.key, views.key, TABLE_FORMAT)  # the same views, any length

    def key_of(n):  # the table of these views with n rows
        return make_key("logits", teacher_key, data.key, views.key, TABLE_FORMAT, n)

    key = key_of(rows)
    table = ctx.store.load_tensor("logits", key)
    if table is None:
        table = _longest_stored(ctx.store, views_key, key_of)
        if table is not None and len(table) >= rows:
            return table[:rows].clone().to(data.train.x.device)
        table = _extend(ctx, teacher, views, table, rows)
        ctx.store.save_tensor("logits", key, table)
        ctx.store.add_rows("logits", views_key, rows)
    return table.to(data.train.x.device)


def _longest_stored(store, views_key, key_of):
    """The longest table of these views (`views_key`; key_of(rows): a table's key) the store holds, or None."""
    for rows in sorted(store.rows("logits", views_key), reverse=True):
        table = store.load_tensor("logits", key_of(rows))
        if table is not None:
            return table
    return None


def _extend(ctx, teacher, views, table, rows):
    """`table` (None: empty) with the rows up to `rows` computed: the teacher on each epoch's views."""
    data, have = ctx.data, 0 if table is None else len(table)
    start, name = time.perf_counter(), "teacher logits" + ("" if views.mix is None else f" ({views.mix.kind})")
    with progress(rows - have, name, ctx.log) as bar:
        epochs = [] if table is None else [table]
        for e in range(have, rows):
            logits = predict(teacher, data.train.x, lambda idx: augmented_views(data.train.x, idx, views, e))
            epochs.append(logits.to(TABLE_DTYPE)[None])
            bar.step("")  # a bar on a terminal; elsewhere the one line below
    table = torch.cat([t.to(data.train.x.device) for t in epochs])
    ctx.log(f"{name}: {rows - have} epochs x {len(data.train)} views ({table.nbytes / 2 ** 20:.1f} MiB) in "
            f"{time.perf_counter() - start:.0f} s" + (f", after the {have} stored" if have else ""))
    return table
