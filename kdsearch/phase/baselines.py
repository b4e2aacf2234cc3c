"""A study's engine phase: the teacher, the teacher's logit table and the fixed baselines, and the public entry
for training any recipe of a study on some seeds (`train_recipe`, the `kdsearch train` command).

The baselines are the notebook's MSE student, a CE student and KD with the notebook's settings; each is made
once and stored."""
import time
from dataclasses import dataclass
from typing import Optional

from kdsearch.core.names import BASELINES
from kdsearch.core.records import Run
from kdsearch.engine.losses import NEEDS_TEACHER
from kdsearch.phase.runs import RunSpec, train_or_load
from kdsearch.phase.store import make_key
from kdsearch.phase.teacher import TABLE_FORMAT, get_teacher, logit_epochs, logit_table
from kdsearch.study.schema import key_fields


@dataclass
class EnginePhase:
    """What the engine phase made: the teacher's Run, the fixed baselines' Runs by name, and the teacher's logit
    table (made at its first need only: a stored KD baseline needs none)."""
    teacher: Run
    baselines: dict
    table: "LogitTables"  # (mix) -> the (epochs, N, classes) tensor of that mixing, made or read once

    @property
    def rows(self):
        """The teacher's Run, then the baselines' in the report's order."""
        return [self.teacher, *(self.baselines[name] for name in BASELINES)]


def run_key(ctx, recipe, seed, teacher_key=None):
    """Everything that determines a run of the study `ctx`: the recipe, its network, the data, the views and the
    seed; runs that read the teacher also depend on it."""
    return make_key("run", key_fields(recipe), ctx.networks.key(recipe.model), ctx.data.key,
                    ctx.views_of(recipe.mix, role=recipe.model).key, seed,
                    (teacher_key, TABLE_FORMAT) if recipe.loss in NEEDS_TEACHER else None)


class LogitTables:
    """The study's logit table of each mixing (Recipe.mix), made (or read) at its first call only, with what they
    cost: the teacher forwards they hold (rows x images, summed over the mixings) and the seconds spent making or
    reading them in this process (a table read from the store costs its reading only)."""

    def __init__(self, ctx, teacher, teacher_key, epochs):
        self.ctx, self.teacher, self.teacher_key, self.epochs = ctx, teacher, teacher_key, epochs
        self.held, self.seconds = {}, 0.0

    def __call__(self, mix="none"):
        if mix not in self.held:
            start = time.perf_counter()
            self.held[mix] = logit_table(self.ctx, self.teacher, self.teacher_key, self.epochs, mix)
            self.seconds += time.perf_counter() - start
        return self.held[mix]

    @property
    def forwards(self):
        return sum(t.shape[0] * t.shape[1] for t in self.held.values())


def run_baselines(ctx, table_epochs: Optional[int] = None, tables=None):
    """Train (or reuse) the teacher and the fixed baselines of the study `ctx`. The logit table covers every KD
    run of the study (the space's longest trial included), or `table_epochs` epochs when given. tables: another
    student's LogitTables of this teacher, shared when the teacher is fed alike (made once per study)."""
    teacher, teacher_run = get_teacher(ctx)
    table = tables if tables is not None and tables.ctx.fed("teacher") == ctx.fed("teacher") else \
        LogitTables(ctx, teacher, teacher_run.key, table_epochs or logit_epochs(ctx.study))
    runs = {}
    for name in BASELINES:
        recipe = getattr(ctx.study.baselines, name)
        spec = RunSpec(name, recipe, ctx.study.seed, run_key(ctx, recipe, ctx.study.seed, teacher_run.key))
        _, runs[name] = train_or_load(ctx, spec, table if recipe.loss in NEEDS_TEACHER else None)
    return EnginePhase(teacher_run, runs, table)


def student_phases(ctx):
    """(student's context, its EnginePhase) for each student of the study, one at a time: the teacher trained
    once and its logit tables made once (shared while the teacher is fed alike), each student's baselines its
    own."""
    tables = None
    for sctx in ctx.students:
        phase = run_baselines(sctx, tables=tables)
        tables = phase.table
        yield sctx, phase
