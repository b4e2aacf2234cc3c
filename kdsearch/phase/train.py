"""The Ray-free engine's public entry: train one recipe of a study on some seeds, in this process, reusing the
study's stored teacher, logit table and runs (`kdsearch train`). Needs neither Ray, Optuna nor MLflow, so it
runs on a machine that has only torch (a GPU box).

A run here is the same run, under the same store key, as a baseline or a confirmation run of that recipe and
seed: whichever made it first, the others read it back."""
import dataclasses
from dataclasses import dataclass

from kdsearch.engine.losses import NEEDS_TEACHER
from kdsearch.phase.baselines import LogitTables, run_key
from kdsearch.phase.runs import RunSpec, train_or_load
from kdsearch.phase.teacher import get_teacher
from kdsearch.study.schema import parse_recipe


@dataclass
class Trained:
    """One recipe's runs over seeds, as `kdsearch train` prints and writes them."""
    name: str  # the recipe's name, with its overrides: kd_reference+loss=dkd+beta=2
    config: dict  # the recipe
    runs: list  # records.Run, one per seed (tables.trained_json writes them with their mean and sd)


def recipe_of(study, name, overrides):
    """The study's recipe `name` (a baseline: student_mse, student_ce, kd_reference) with `overrides`
    ({field: value}) applied and validated; returns (label, Recipe)."""
    fields = {**dataclasses.asdict(getattr(study.baselines, name)), **overrides}
    label = "+".join([name, *(f"{k}={v}" for k, v in overrides.items())])
    return label, parse_recipe(fields, "--set")


def train_recipe(ctx, label, recipe, seeds):
    """Train (or read back) `recipe` on each seed of `seeds` in the study `ctx`; returns a Trained. The views
    and the logit table stay the study seed's; a seed changes the initialisation and the batch order."""
    table, teacher_key = None, None
    if recipe.loss in NEEDS_TEACHER:  # else no teacher
        teacher, teacher_run = get_teacher(ctx)
        teacher_key = teacher_run.key
        # the rows this recipe reads: a stored longer table serves them, and a later search extends this one
        table = LogitTables(ctx, teacher, teacher_key, recipe.epochs)
    runs = []
    for seed in seeds:
        spec = RunSpec(label, recipe, seed, run_key(ctx, recipe, seed, teacher_key))
        runs.append(train_or_load(ctx, spec, table)[1])
    return Trained(label, dataclasses.asdict(recipe), runs)
