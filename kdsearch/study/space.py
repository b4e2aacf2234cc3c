"""Facts about a study's search space that need neither Ray nor Optuna: its arms (the KD search and the CE
control arm), the longest trial a space allows and the first trial's point (its arm's baseline's settings).
`space` is the study's {name: schema.Param}."""
import dataclasses
from dataclasses import dataclass

from kdsearch.core.names import ARMS
from kdsearch.study.schema import DISTILLATION


@dataclass(frozen=True)
class Arm:
    """One arm of a search: kd (the distillation search) or ce (the control arm: a CE student searched with the
    same budget), its space, and the recipe of its baseline (names.ARMS), which every trial starts from."""
    name: str
    space: dict  # {name: schema.Param}
    base: object  # schema.Recipe: kd_reference's, student_ce's

    @property
    def baseline(self):
        return ARMS[self.name]


def control_space(space):
    """The CE arm's space: the study's without the values only distillation reads (schema.DISTILLATION), each
    value searched for every trial (a value the KD space gives to some losses only, CE takes too)."""
    return {k: dataclasses.replace(p, losses=None) for k, p in space.items() if k not in DISTILLATION}


def study_arms(study, log):
    """The search's arms: kd, and ce unless search.control is false or the space searches nothing but
    distillation values (then `log` says so, and kd_best is compared with the fixed baselines alone)."""
    arms = [Arm("kd", study.space, study.baselines.kd_reference)]
    ce = control_space(study.space)
    if study.search.control and not ce:
        log(f"search: the space searches only distillation values ({', '.join(study.space)}), so the CE control arm "
            f"has nothing to search; kd_best is compared with the fixed student_ce only (add a recipe value such as "
            f"lr or epochs to the space to search a CE student too)")
    return arms + ([Arm("ce", ce, study.baselines.student_ce)] if study.search.control and ce else [])


def space_epochs(space, base):
    """The longest a trial can run: the space's largest epoch count, or the base recipe's when not searched."""
    p = space.get("epochs")
    if p is None:
        return base.epochs
    return int(max(p.values) if p.type == "choice" else p.high)


def first_point(space, base, log, name="kd_reference"):
    """The base recipe's settings (`name`'s: by default kd_reference, the notebook's T 4.5, alpha 0.8, lr 1e-3),
    moved to the nearest point of the space, so that the first trial is that baseline."""
    point = {}
    for key in sorted(space, key=lambda n: n != "loss"):  # the loss first: the other values depend on it
        p, value = space[key], getattr(base, key)
        if p.losses is not None and point.get("loss", base.loss) not in p.losses:
            continue  # not a value of the first trial's loss
        if value is None and not (p.type == "choice" and None in p.values):
            continue  # the base has none (a loss's default, say): Optuna draws it
        if p.type == "choice" and value not in p.values and (value is None or isinstance(value, (str, bool))):
            clipped = p.values[0]  # no nearest: the first listed
        elif p.type == "choice":
            clipped = value if value in p.values else min(p.values, key=lambda v: abs(v - value))
        else:
            clipped = min(max(value, p.low), p.high)
        if p.type == "int":
            step = p.step or 1
            clipped = min(int(p.low + round((clipped - p.low) / step) * step), int(p.high))
        if clipped != value:
            log(f"search: {name}'s {key} = {value} lies outside the space; the first trial uses {clipped}")
        point[key] = clipped
    return point
