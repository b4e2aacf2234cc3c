"""Study files: YAML -> typed, validated dataclasses. Every rule is checked before anything runs.

A study file only needs `name`; every other value has the notebook's default. Errors name the file, the key
path and the rule, e.g. `study.yaml: teacher.lr: must be > 0 (got -0.1)`.
"""
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .losses import LOSSES, NEEDS_TEACHER
from .models import MODELS
from .validation import check, from_dict, rule


@dataclass
class Recipe:
    """How one network is trained. Defaults are the notebook's KD student."""
    model: str = rule("student", choices=sorted(MODELS))  # architecture, from models.MODELS
    loss: str = rule("kd", choices=sorted(LOSSES))  # training loss, from losses.LOSSES
    optimizer: str = rule("adam", choices=["adam", "sgd"])
    lr: float = rule(1e-3, gt=0)  # learning rate (the peak, with a cosine schedule)
    momentum: float = rule(0.9, ge=0, le=1)  # SGD only
    weight_decay: float = rule(0.0, ge=0)  # L2 penalty, as the optimizer's weight_decay
    schedule: str = rule("none", choices=["none", "cosine"])  # cosine: anneal lr to 0 over `epochs`, per epoch
    epochs: int = rule(30, ge=1)
    batch_size: int = rule(256, ge=1)
    temperature: float = rule(4.5, gt=0)  # KD only: softmax temperature T
    alpha: float = rule(0.8, ge=0, le=1)  # KD only: weight of the hard-label CE term; 1 - alpha weighs the KL
    beta: typing.Optional[float] = rule(None, ge=0)  # dkd: NCKD's weight (null: 8); dist: inter-class (null: 1)
    gamma: typing.Optional[float] = rule(None, ge=0)  # dist only: the intra-class term's weight (null: 1)


def key_fields(recipe):
    """A recipe as a dict for cache keys: beta and gamma are left out while null, so that every run stored before
    they existed keeps its key (and is not trained again)."""
    return {k: v for k, v in dataclasses.asdict(recipe).items() if not (k in ("beta", "gamma") and v is None)}


def _teacher_recipe():
    return Teacher(model="teacher", loss="ce", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                   schedule="cosine", epochs=50)


@dataclass
class Teacher(Recipe):
    """The teacher's recipe (notebook: SGD 0.1, momentum 0.9, wd 5e-4, cosine over 50 epochs), or a checkpoint."""
    loss: str = rule("ce", choices=["ce", "mse"])  # the teacher learns from labels only
    checkpoint: typing.Optional[str] = None  # a TeacherNet state_dict (.pt) to use instead of training one


@dataclass
class Baselines:
    """The fixed student baselines every search is compared against."""
    # the notebook's "normal" student: MSE on one-hot targets, Adam 1e-4, 25 epochs
    student_mse: Recipe = rule(factory=lambda: Recipe(loss="mse", lr=1e-4, epochs=25))
    # the fair baseline the notebook's text promises: the same student with CE, Adam 1e-3, 30 epochs
    student_ce: Recipe = rule(factory=lambda: Recipe(loss="ce", lr=1e-3, epochs=30))
    # KD with the notebook's settings: T 4.5, alpha 0.8, Adam 1e-3, 30 epochs
    kd_reference: Recipe = rule(factory=lambda: Recipe(loss="kd", temperature=4.5, alpha=0.8, lr=1e-3, epochs=30))


@dataclass
class Data:
    source: str = rule("auto", choices=["auto", "cifar10", "imagefolder"])  # auto: archive/folder -> imagefolder
    path: str = "data"  # CIFAR10 download folder, or an image-folder archive / folder; --data overrides
    val_size: int = rule(5000, ge=1)  # validation images carved from the training set (stratified, seeded)
    train_subset: typing.Optional[int] = rule(None, ge=1)  # train on a stratified subset of this size (quick runs)


NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"  # a plain folder name: no path separators, no leading dot
SEARCHABLE = ("loss", "temperature", "alpha", "beta", "gamma", "lr", "epochs", "weight_decay",
              "batch_size")  # Recipe fields a space may hold
LOSS_PARAMS = {"beta": ("dkd", "dist"), "gamma": ("dist",)}  # recipe values that only some losses take


@dataclass
class Param:
    """One searched hyperparameter: uniform / loguniform (floats), int (with step), or choice (listed values)."""
    type: str = rule(choices=["uniform", "loguniform", "int", "choice"])
    low: typing.Optional[float] = None  # inclusive bounds (uniform, loguniform, int)
    high: typing.Optional[float] = None
    step: typing.Optional[int] = rule(None, ge=1)  # int only: the grid step from low
    values: typing.Optional[list] = None  # choice only
    losses: typing.Optional[list] = None  # with a searched loss: the losses this value belongs to (default: all
    # that take it), so that a trial of another loss neither draws nor shows it


def _default_space():
    # a sensible full-scale space around the notebook's T = 4.5, alpha = 0.8, lr = 1e-3, 30 epochs
    return {"temperature": Param("loguniform", 1.0, 20.0), "alpha": Param("uniform", 0.0, 1.0),
            "lr": Param("loguniform", 1e-4, 1e-2), "epochs": Param("int", 10, 60, step=5)}


@dataclass
class Search:
    num_samples: int = rule(20, ge=1)  # trials; --num-samples overrides
    max_concurrent: int = rule(2, ge=1)  # trials running at once
    seed: int = rule(0, ge=0)  # seeds Optuna's sampler (TPE)
    scheduler: str = rule("none", choices=["none", "asha"])  # asha: stop poor trials early (see README)
    grace_period: int = rule(2, ge=1)  # ASHA: epochs every trial runs before it may be stopped
    reduction_factor: int = rule(3, ge=2)  # ASHA: keep the best 1/reduction_factor at each rung
    max_failures: int = rule(2, ge=0)  # a trial that raises is retried from its checkpoint this often, then failed


@dataclass
class Confirm:
    """After the search: the best configurations and the CE / KD baselines re-trained on more seeds."""
    top_k: int = rule(3, ge=1)  # best completed configurations to confirm
    seeds: int = rule(3, ge=1)  # seeds per confirmed model, the study's seed first (its runs are reused); 1: off


@dataclass
class Resources:
    cpu: float = rule(1.0, gt=0)  # CPUs per trial; torch threads in the trial match it
    gpu: typing.Optional[float] = rule(None, ge=0)  # GPUs per trial (fractions share one); null: 1/max_concurrent
    # of a GPU when torch sees one, else 0


@dataclass
class Tracking:
    uri: typing.Optional[str] = None  # MLflow tracking URI; default sqlite:///<results>/mlflow.db
    experiment: typing.Optional[str] = None  # MLflow experiment; default: the study name


def _space(raw, file, key):
    """Validate a search space: known keys, a complete and ordered range, bounds that obey the Recipe's rules."""
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{file}: {key}: must be a mapping of hyperparameters; fix: list at least one of "
                        f"{', '.join(SEARCHABLE)}")
    recipe_fields = {f.name: f for f in dataclasses.fields(Recipe)}
    hints = typing.get_type_hints(Recipe)
    space = {}
    for name, spec in raw.items():
        at = f"{key}.{name}"
        if name not in SEARCHABLE:
            raise UserError(f"{file}: {at}: cannot be searched; fix: use one of {', '.join(SEARCHABLE)}")
        p = from_dict(Param, spec, file, at + ".")
        typ, meta = hints[name], recipe_fields[name].metadata
        if p.type == "choice":
            if not p.values:
                raise UserError(f"{file}: {at}.values: a choice needs a non-empty list of values; fix: add them")
            p.values = [check(v, typ, meta, file, f"{at}.values") for v in p.values]
        else:
            for end in ("low", "high"):
                if getattr(p, end) is None:
                    raise UserError(f"{file}: {at}.{end}: required for type {p.type}; fix: add it")
                bound_type = int if p.type == "int" else float
                setattr(p, end, check(spec[end], bound_type, meta, file, f"{at}.{end}"))
            if p.type == "int" and typ is not int:
                raise UserError(f"{file}: {at}.type: {name} is a float; fix: use uniform or loguniform")
            if p.type != "int" and typ is int:
                raise UserError(f"{file}: {at}.type: {name} is an integer; fix: use int (or choice)")
            if not p.low < p.high:
                raise UserError(f"{file}: {at}: low must be < high (got low={p.low}, high={p.high}); fix: "
                                f"swap or widen them")
            if p.type == "loguniform" and p.low <= 0:
                raise UserError(f"{file}: {at}.low: must be > 0 for loguniform (got {p.low}); fix: raise it "
                                f"or use uniform")
        space[name] = p
    _conditions(space, file, key)
    return space


def _conditions(space, file, key):
    """A searched loss is a choice of distillation losses; every other value belongs to the losses that take it
    (Param.losses, filled in when not given). Without a searched loss, every value must suit kd_reference's kd."""
    families = space["loss"].values if "loss" in space else None
    if "loss" in space and (space["loss"].type != "choice" or not set(families) <= NEEDS_TEACHER):
        raise UserError(f"{file}: {key}.loss: must be a choice of distillation losses "
                        f"({', '.join(sorted(NEEDS_TEACHER))}), got {space['loss'].type} {families or ''}; fix: "
                        f"edit {key}.loss in {file}")
    for name, p in space.items():
        at, takes = f"{key}.{name}", LOSS_PARAMS.get(name)
        if name == "loss":
            continue
        if families is None:
            if p.losses is not None:
                raise UserError(f"{file}: {at}.losses: only with a searched {key}.loss; fix: add {key}.loss or "
                                f"remove {at}.losses")
            if takes:
                raise UserError(f"{file}: {at}: kd_reference's kd loss takes no {name} (only "
                                f"{' and '.join(takes)}); fix: search {key}.loss with {' or '.join(takes)}, or "
                                f"remove {at}")
            continue
        for loss in p.losses or ():
            if loss not in families or (takes and loss not in takes):
                why = f"not among {key}.loss.values" if loss not in families else f"the {loss} loss takes no {name}"
                raise UserError(f"{file}: {at}.losses: {loss}: {why}; fix: edit {at}.losses in {file}")
        if p.losses is None and takes:
            p.losses = [loss for loss in families if loss in takes]
            if not p.losses:
                raise UserError(f"{file}: {at}: none of {key}.loss.values takes {name} (only "
                                f"{' and '.join(takes)}); fix: add one of them to {key}.loss, or remove {at}")


@dataclass
class Study:
    name: str = rule(pattern=NAME_PATTERN)  # names the study's folder and MLflow experiment
    seed: int = rule(0, ge=0)  # seeds the split, the augmented views, initialisation and batch order
    device: str = rule("auto", choices=["auto", "cpu", "cuda"])  # auto: cuda when there is one
    threads: int = rule(0, ge=0)  # torch CPU threads; 0: one per core
    data: Data = rule(factory=Data)
    teacher: Teacher = rule(factory=_teacher_recipe)
    baselines: Baselines = rule(factory=Baselines)
    space: typing.Dict[str, Param] = rule(factory=_default_space, parse=_space)  # searched; others: kd_reference's
    search: Search = rule(factory=Search)
    confirm: Confirm = rule(factory=Confirm)
    resources: Resources = rule(factory=Resources)
    tracking: Tracking = rule(factory=Tracking)


def load_study(path, overrides=None):
    """Read and validate a study file; `overrides` maps dotted keys to values (from the command line)."""
    import yaml
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"study file {path} does not exist; fix: give the path of a study YAML file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read study file {path} ({e}); fix: give a readable YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = f" ({e.problem})" if getattr(e, "problem", None) else ""
        raise UserError(f"{path}: not valid YAML{where}{problem}; fix: correct the YAML syntax") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a study file must be a mapping of keys (name, data, teacher, ...); fix: start "
                        f"from search_spaces/cifar10_quick.yaml")
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                break  # from_dict reports the malformed section
        else:
            node[leaf] = value
    study = from_dict(Study, raw, str(path))
    ref = study.baselines.kd_reference
    if ref.loss != "kd" or ref.model != "student":
        raise UserError(f"{path}: baselines.kd_reference: must be KD of the student (loss: kd, model: student), as "
                        f"every trial starts from it; fix: edit baselines.kd_reference in {path}")
    for name in ("student_mse", "student_ce", "kd_reference"):
        recipe = getattr(study.baselines, name)
        for key, losses in (("beta", ("dkd", "dist")), ("gamma", ("dist",))):
            if getattr(recipe, key) is not None and recipe.loss not in losses:
                raise UserError(f"{path}: baselines.{name}.{key}: the {recipe.loss} loss takes no {key} (only "
                                f"{' and '.join(losses)}); fix: remove baselines.{name}.{key} from {path}")
    ckpt = study.teacher.checkpoint
    if ckpt and not Path(ckpt).expanduser().is_file():
        raise UserError(f"{path}: teacher.checkpoint: {ckpt} does not exist; fix: give the path of a TeacherNet "
                        f"state_dict, or remove the key to train the teacher")
    return study
