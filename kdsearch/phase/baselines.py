"""A study's engine phase: the teacher, the teacher's logit table and the fixed baselines, and the public entry
for training any recipe of a study on some seeds (`train_recipe`, the `kdsearch train` command).

The baselines are the notebook's MSE student, a CE student and KD with the notebook's settings; each is made
once and stored."""
from dataclasses import dataclass
from typing import Callable, Optional

from kdsearch.core.names import BASELINES
from kdsearch.core.records import Run
from kdsearch.engine.losses import NEEDS_TEACHER
from kdsearch.phase.runs import RunSpec, train_or_load
from kdsearch.phase.store import make_key
from kdsearch.phase.teacher import get_teacher, logit_epochs, logit_table
from kdsearch.study.schema import key_fields


@dataclass
class EnginePhase:
    """What the engine phase made: the teacher's Run, the fixed baselines' Runs by name, and the teacher's logit
    table (made at its first need only: a stored KD baseline needs none)."""
    teacher: Run
    baselines: dict
    table: Callable[[str], object]  # (mix) -> the (epochs, N, classes) tensor of that mixing, made or read once

    @property
    def rows(self):
        """The teacher's Run, then the baselines' in the report's order."""
        return [self.teacher, *(self.baselines[name] for name in BASELINES)]


def run_key(ctx, recipe, seed, teacher_key=None):
    """Everything that determines a run of the study `ctx`: the recipe, its network, the data, the views and the
    seed; runs that read the teacher also depend on it."""
    return make_key("run", key_fields(recipe), ctx.networks.key(recipe.model), ctx.data.key,
                    ctx.views_of(recipe.mix).key, seed,
                    teacher_key if recipe.loss in NEEDS_TEACHER else None)


def lazy_table(ctx, teacher, teacher_key, epochs):
    """A function of a mixing (Recipe.mix) that returns the study's logit table of it, made (or read) at its
    first call only."""
    held = {}

    def table(mix="none"):
        if mix not in held:
            held[mix] = logit_table(ctx, teacher, teacher_key, epochs, mix)
        return held[mix]
    return table


def run_baselines(ctx, table_epochs: Optional[int] = None):
    """Train (or reuse) the teacher and the fixed baselines of the study `ctx`. The logit table covers every KD
    run of the study (the space's longest trial included), or `table_epochs` epochs when given."""
    teacher, teacher_run = get_teacher(ctx)
    table = lazy_table(ctx, teacher, teacher_run.key, table_epochs or logit_epochs(ctx.study))
    runs = {}
    for name in BASELINES:
        recipe = getattr(ctx.study.baselines, name)
        spec = RunSpec(name, recipe, ctx.study.seed, run_key(ctx, recipe, ctx.study.seed, teacher_run.key))
        _, runs[name] = train_or_load(ctx, spec, table if recipe.loss in NEEDS_TEACHER else None)
    return EnginePhase(teacher_run, runs, table)
