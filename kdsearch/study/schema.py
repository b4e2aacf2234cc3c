"""Study files: YAML -> typed, validated pydantic dataclasses. Every rule is checked before anything runs.

A study file only needs `name`; every other value has the notebook's default. A mistake is one line naming the
file, the key path and the rule, e.g. `study.yaml: teacher.lr: must be > 0 (got -0.1)` (validation.py words
pydantic's errors). What each loss takes (beta, gamma) and whether it reads the teacher come from losses.LOSSES.
`json_schema()` gives the same schema to editors.
"""
import dataclasses
from pathlib import Path
from typing import Dict, List, Literal, Optional

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from kdsearch.core.errors import UserError
from kdsearch.core.names import NEUTRAL
from kdsearch.engine.losses import LOSSES, NEEDS_TEACHER, OPTIONAL_VALUES, losses_taking
from kdsearch.engine.models import MODELS
from kdsearch.study.inputs import Augment, Data, Models
from kdsearch.study.running import Confirm, Report, Resources, Search, Tracking
from kdsearch.study.validation import CONFIG, Bound, Float, Int, check_space, read_yaml, rule, user_error

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"  # a plain folder name: no path separators, no leading dot
LossName = Literal[tuple(sorted(LOSSES))]
ModelName = Literal[tuple(sorted(MODELS))]
Optimizer, Schedule = Literal["adam", "adamw", "sgd"], Literal["none", "cosine", "onecycle"]
MIXES = ("none", "mixup", "cutmix")  # Recipe.mix: none, or augment.mixup's or augment.cutmix's mixing
MixKind = Literal[MIXES]


def _nulls(value):  # what a null optional value means, per loss: "null: dkd 8, dist 1"
    return "null: " + ", ".join(f"{loss} {LOSSES[loss].takes[value]:g}" for loss in losses_taking(value))


@dataclass(config=CONFIG)
class Recipe:
    """How one network is trained. Defaults are the notebook's KD student."""
    model: ModelName = Field("student", description="the network's role: the study's models.teacher or .student")
    loss: LossName = Field("kd", description="training loss, from losses.LOSSES")
    optimizer: Optimizer = Field("adam", description="adamw: Adam with decoupled weight decay")
    lr: Float(gt=0) = Field(1e-3, description="learning rate (the peak, with a cosine schedule)")
    momentum: Float(ge=0, le=1) = Field(0.9, description="SGD only")
    weight_decay: Float(ge=0) = Field(0.0, description="L2 penalty, as the optimizer's weight_decay")
    schedule: Schedule = Field("none", description="per epoch: cosine anneals lr to 0 over `epochs` (after any "
                               "warm-up); onecycle rises from lr/25 to lr, then anneals to lr/2.5e5")
    epochs: Int(ge=1) = 30
    batch_size: Int(ge=1) = 256
    temperature: Float(gt=0) = Field(4.5, description="distillation: the softmax temperature T")
    alpha: Float(ge=0, le=1) = Field(0.8, description="distillation: the hard-label CE term's weight")
    beta: Optional[Float(ge=0)] = Field(None, description=f"dkd: NCKD's weight; dist: inter-class ({_nulls('beta')})")
    gamma: Optional[Float(ge=0)] = Field(None, description=f"dist: the intra-class term's weight ({_nulls('gamma')})")
    # the levers' defaults are their neutral values (names.NEUTRAL), which leave a recipe's cache key as it was
    nesterov: bool = Field(NEUTRAL["nesterov"], description="SGD only: Nesterov momentum")
    warmup_epochs: Int(ge=0) = Field(NEUTRAL["warmup_epochs"], description="epochs of linear warm-up to lr (onecycle: 0 means 30 % of "
                                     "the epochs; as many as the run's epochs: it never reaches the peak)")
    ema: Optional[Float(gt=0, lt=1)] = Field(NEUTRAL["ema"], description="decay of an exponential moving average of the "
                                             "weights, which are then the ones evaluated and kept (e.g. 0.999)")
    label_smoothing: Float(ge=0, lt=1) = Field(NEUTRAL["label_smoothing"], description="label smoothing of the hard-label CE term")
    grad_clip: Optional[Float(gt=0)] = Field(NEUTRAL["grad_clip"], description="clip the gradients' global norm to this")
    mix: MixKind = Field(NEUTRAL["mix"], description="mix each training view with a partner's, labels too: mixup or "
                         "cutmix, with the study's augment.mixup / augment.cutmix (each its own logit table)")

    @model_validator(mode="after")
    def _levers_fit(self):
        # like momentum, nesterov is SGD's alone and ignored by the others, so that a space may search both
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise rule("nesterov", "needs momentum > 0", "raise momentum or remove {key} from {where}")
        if self.label_smoothing and self.loss == "mse":
            raise rule("label_smoothing", "the mse loss has no CE term to smooth", "remove {key} from {where}")
        return self

    @model_validator(mode="after")
    def _loss_takes_its_values(self):
        for name in OPTIONAL_VALUES:
            if getattr(self, name) is not None and name not in LOSSES[self.loss].takes:
                raise rule(name, f"the {self.loss} loss takes no {name} (only {' and '.join(losses_taking(name))})",
                           "remove {key} from {where}")
        return self


SEARCHABLE = tuple(f.name for f in dataclasses.fields(Recipe) if f.name != "model")  # what a space may hold
# the values only distillation reads: the CE control arm searches the space without them (space.control_space)
DISTILLATION = ("loss", "temperature", "alpha", *OPTIONAL_VALUES)


@dataclass(config=CONFIG)
class Teacher(Recipe):
    """The teacher's recipe (notebook: SGD 0.1, momentum 0.9, wd 5e-4, cosine over 50 epochs), or a checkpoint."""
    model: ModelName = "teacher"
    loss: Literal[tuple(n for n in sorted(LOSSES) if n not in NEEDS_TEACHER)] = Field(
        "ce", description="the teacher learns from labels only")
    optimizer: Optimizer = "sgd"
    lr: Float(gt=0) = 0.1
    weight_decay: Float(ge=0) = 5e-4
    schedule: Schedule = "cosine"
    epochs: Int(ge=1) = 50
    checkpoint: Optional[str] = Field(None, description="a state_dict (.pt) of models.teacher to use instead of "
                                                        "training one")


_BASELINES = {}  # name -> its defaults, where they differ from Recipe's


def _baseline(name, doc, **defaults):
    _BASELINES[name] = defaults
    shown = "".join(f"{k} {v}, " for k, v in defaults.items())
    return Field(default_factory=lambda: Recipe(**defaults), description=f"{doc} (defaults: {shown}else Recipe's)")


@dataclass(config=CONFIG)
class Baselines:
    """The fixed student baselines every search is compared against."""
    student_mse: Recipe = _baseline("student_mse", "the notebook's \"normal\" student: MSE on one-hot targets",
                                    loss="mse", lr=1e-4, epochs=25)
    student_ce: Recipe = _baseline("student_ce", "the fair baseline the notebook's text promises: the same student "
                                   "with CE", loss="ce")
    kd_reference: Recipe = _baseline("kd_reference", "KD with the notebook's settings (Recipe's defaults); every "
                                     "trial starts from it")

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, raw):
        """A baseline given in part keeps its own defaults for the rest (student_mse: {epochs: 10} stays MSE)."""
        if not isinstance(raw, dict):
            return raw
        return {k: {**_BASELINES[k], **v} if k in _BASELINES and isinstance(v, dict) else v for k, v in raw.items()}

    @model_validator(mode="after")
    def _reference_is_kd_of_the_student(self):
        if self.kd_reference.loss != "kd" or self.kd_reference.model != "student":
            raise rule("kd_reference", "must be KD of the student (loss: kd, model: student), as every trial "
                                       "starts from it")
        return self


@dataclass(config=CONFIG)
class Param:
    """One searched hyperparameter: uniform / loguniform (floats), int (with step), or choice (listed values)."""
    type: Literal["uniform", "loguniform", "int", "choice"]
    low: Optional[Bound] = Field(None, description="inclusive bounds (uniform, loguniform, int)")
    high: Optional[Bound] = None
    step: Optional[Int(ge=1)] = Field(None, description="int only: the grid step from low")
    values: Optional[list] = Field(None, description="choice only")
    losses: Optional[List[LossName]] = Field(None, description="with a searched loss: the losses this value belongs "
                                             "to (default: all that take it); others neither draw nor show it")


def _default_space():
    # a sensible full-scale space around the notebook's T = 4.5, alpha = 0.8, lr = 1e-3, 30 epochs
    return {"temperature": Param("loguniform", 1.0, 20.0), "alpha": Param("uniform", 0.0, 1.0),
            "lr": Param("loguniform", 1e-4, 1e-2), "epochs": Param("int", 10, 60, step=5)}


@dataclass(config=CONFIG)
class Study:
    """A kdsearch study file: only `name` is required; every other value has the notebook's default."""
    name: str = Field(pattern=NAME_PATTERN, description="names the study's folder and MLflow experiment")
    seed: Int(ge=0) = Field(0, description="seeds the split, the augmented views, initialisation and batch order")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when there is one")
    threads: Int(ge=0) = Field(0, description="torch CPU threads; 0: one per core")
    models: Models = Field(default_factory=Models)
    data: Data = Field(default_factory=Data)
    augment: Augment = Field(default_factory=Augment)
    teacher: Teacher = Field(default_factory=Teacher)
    baselines: Baselines = Field(default_factory=Baselines)
    space: Dict[Literal[SEARCHABLE], Param] = Field(default_factory=_default_space, min_length=1, description=(
        "searched recipe values (a given space replaces this default whole); the others are kd_reference's"))
    search: Search = Field(default_factory=Search)
    confirm: Confirm = Field(default_factory=Confirm)
    resources: Resources = Field(default_factory=Resources)
    tracking: Tracking = Field(default_factory=Tracking)
    report: Report = Field(default_factory=Report)

    @field_validator("space", mode="before")
    @classmethod
    def _searchable(cls, raw):
        """The space's own words for its keys (the type refuses the same)."""
        if not isinstance(raw, dict) or not raw:
            raise rule("", "must be a mapping of hyperparameters", f"list at least one of {', '.join(SEARCHABLE)}")
        for name in raw:
            if name not in SEARCHABLE:
                raise rule(str(name), "cannot be searched", f"use one of {', '.join(SEARCHABLE)}")
        return raw

    @model_validator(mode="after")
    def _space_rules(self):
        check_space(self.space, Recipe, self.baselines.kd_reference.loss)
        return self


def key_fields(recipe):
    """A recipe as a dict for cache keys: beta and gamma are left out while null, and the training levers while
    NEUTRAL, so that every run stored before they existed keeps its key (and is not trained again)."""
    return {k: v for k, v in dataclasses.asdict(recipe).items()
            if not (k in OPTIONAL_VALUES and v is None) and not (k in NEUTRAL and v == NEUTRAL[k])}


def _validate(cls, raw, where):
    try:
        return TypeAdapter(cls).validate_python(raw)
    except ValidationError as e:
        raise user_error(e, where, cls) from None


def parse_recipe(fields, where):
    """A dict of recipe values (e.g. from --set) as a Recipe, by the study file's rules; a mistake is a one-line
    UserError naming `where` (e.g. "--set") and the key."""
    return _validate(Recipe, fields, where)


def json_schema():
    """The study file's JSON Schema (draft 2020-12), e.g. for `# yaml-language-server: $schema=...`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **TypeAdapter(Study).json_schema()}


def load_study(path, overrides=None):
    """Read and validate a study file; `overrides` maps dotted keys to values (from the command line)."""
    raw = read_yaml(path, overrides)
    study = _validate(Study, raw, str(path))
    ckpt = study.teacher.checkpoint
    if ckpt and not Path(ckpt).expanduser().is_file():  # here, not in Teacher: a recipe is checked without disk
        raise UserError(f"{path}: teacher.checkpoint: {ckpt} does not exist; fix: give the path of a state_dict "
                        f"of models.teacher, or remove the key to train the teacher")
    return study
