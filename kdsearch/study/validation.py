"""What schema.py's schema needs besides pydantic's own types: field types that read YAML as a person writes it,
the study file read with its dotted overrides, the search space's rules across its values, and pydantic's errors
in kdsearch's words: one line naming the file (or the option), the key path and the rule, e.g. `study.yaml:
teacher.lr: must be > 0 (got -0.1); fix: edit teacher.lr in study.yaml`."""
import functools
import re
import typing
from pathlib import Path
from typing import Annotated, Union

from pydantic import BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

from kdsearch.core.errors import UserError
from kdsearch.engine.losses import NEEDS_TEACHER, OPTIONAL_VALUES, losses_taking

NOTHING = object()  # no "(got ...)": the rule is not about one value
EDIT = "edit {key} in {where}"
TYPES = {"int_type": "an int", "float_type": "a number", "string_type": "a str", "list_type": "a list"}
BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
MAPPING = {"dataclass_type", "dataclass_args_type", "model_type", "dict_type"}
UNKNOWN = {"unexpected_keyword_argument", "extra_forbidden", "invalid_key"}
NAME_RULE = "must be letters, digits, '_', '.' or '-', not starting with '.' (it names a folder)"  # the one pattern


def _number(value):
    """YAML 1.1 reads 1e-3 as a string, which a float field takes, as it takes an int; a bool stays refused."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return float(value) if type(value) is int else value


CONFIG = ConfigDict(extra="forbid")  # every schema section: an unknown key is a typo, refused, never ignored


def Float(**bounds):
    """A float field's type with pydantic's bounds (gt, ge, le), inside the conversion so that the schema has them."""
    return Annotated[float, Strict(), Field(**bounds), BeforeValidator(_number)]


def Int(**bounds):
    """An int field's type: a bool, a float (even 2.0) or a string is refused."""
    return Annotated[int, Strict(), Field(**bounds)]


def _bound(value):
    """A searched range's end: an int stays an int (the space's rules give it its field's type)."""
    value = value if type(value) is int else _number(value)
    if type(value) not in (int, float):
        raise rule("", "must be a number", got=value)
    return value


Bound = Annotated[Union[int, float], BeforeValidator(_bound), WithJsonSchema({"type": "number"})]


def read_yaml(path, overrides=None):
    """A study file's mapping, with `overrides` (dotted keys: values) set in it, a missing section made."""
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
                break  # the validation reports the malformed section
        else:
            node[leaf] = value
    return raw


def rule(at, words, fix=EDIT, got=NOTHING):
    """A rule that a validator found broken at the key path `at` below its own place (raise it). `fix` may name
    {key} and {where}."""
    shown = {} if got is NOTHING else {"got": got}
    return PydanticCustomError("kdsearch", "{words}", {"at": at, "words": words, "fix": fix, **shown})


def reword(error, at):
    """One of pydantic's errors (an item of ValidationError.errors()) as a rule broken at `at`."""
    return rule(at, *_explain(error, None, None))


ONE, MANY = "one network", "a list of networks"  # the tags of a value that is one entry or a list of them


def user_error(error, where, root):
    """The first error of a pydantic ValidationError, validating dataclass `root` from what `where` holds (a
    study file, or an option such as --set), as a one-line UserError: WHERE: KEY: RULE (got VALUE); fix: FIX."""
    err = error.errors()[0]
    # a list's item, or which of one entry or a list it was read as: the key alone
    loc = [str(part) for part in err["loc"] if not isinstance(part, int) and part not in (ONE, MANY)]
    words, fix, got = _explain(err, _owner(root, loc), loc[-1] if loc else None)
    at = (err.get("ctx") or {}).get("at") if err["type"] == "kdsearch" else None
    key = ".".join(loc + [at] if at else loc) or "top level"
    shown = "" if got is NOTHING else f" (got {got!r})"
    return UserError(f"{where}: {key}: {words}{shown}; fix: {fix.format(key=key, where=where)}".replace("\n", " "))


def _explain(err, owner, name):
    """(words, fix, got) for one pydantic error at key `name` of dataclass `owner` (None: not known)."""
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input", NOTHING)
    fields = getattr(owner, "__pydantic_fields__", {})
    if kind == "kdsearch":
        return ctx["words"], ctx["fix"], ctx.get("got", NOTHING)
    if kind == "missing":
        return "required key is missing", "add it", NOTHING
    if kind in UNKNOWN:
        return "unknown key", f"use one of {', '.join(fields)}" if fields else "remove it", NOTHING
    if kind in MAPPING:
        return "must be a mapping", "indent its keys below it", NOTHING
    if kind in TYPES:
        nullable = name in fields and type(None) in typing.get_args(fields[name].annotation)
        words = f"must be {'null or ' if nullable else ''}{TYPES[kind]}"
    elif kind in BOUNDS:
        limit = next(iter(ctx.values()))  # a float field's bound is a float: 0, not 0.0
        words = f"must be {BOUNDS[kind]} {int(limit) if float(limit).is_integer() else limit}"
    elif kind == "literal_error":
        words = "must be one of " + ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
    elif kind == "string_pattern_mismatch":
        words = NAME_RULE
    else:
        words = err["msg"][:1].lower() + err["msg"][1:]
    return words, EDIT, got


def _owner(root, loc):
    """The dataclass that holds the last key of `loc`, found by walking `root`'s fields (None past a list)."""
    owner = root
    for part in loc[:-1]:
        fields = getattr(owner, "__pydantic_fields__", None)
        if fields is not None:
            owner = _dataclass_in(fields[part].annotation) if part in fields else None
        elif typing.get_origin(owner) is dict:  # `part` is one of its keys
            owner = typing.get_args(owner)[1]
        else:
            return None
    return owner


def _dataclass_in(tp):
    """The dataclass (or dict) a field's type holds: itself, or the first found in a Union, Annotated or list
    (models.student: one NetworkEntry or a list of them)."""
    if getattr(tp, "__pydantic_fields__", None) is not None or typing.get_origin(tp) is dict:
        return tp
    return next((found for arg in typing.get_args(tp) if (found := _dataclass_in(arg)) is not None), None)


@functools.cache
def _field_type(recipe, name):
    """The type of field `name` of `recipe` (schema.Recipe), with its bounds."""
    return TypeAdapter(typing.get_type_hints(recipe, include_extras=True)[name])


def _as_field(recipe, name, value, at):
    try:
        return _field_type(recipe, name).validate_python(value)
    except ValidationError as e:
        raise reword(e.errors()[0], at) from None


def check_space(space, recipe, reference_loss):
    """The search space's rules (schema.Study's, after its types): per searched value a non-empty choice, or a
    complete and ordered range of its field's kind, each end or choice by the rules of its field of `recipe`
    (schema.Recipe). Then _conditions, for kd_reference's loss `reference_loss`."""
    for name, p in space.items():
        at, kind = f"space.{name}", recipe.__pydantic_fields__[name].annotation
        if p.type == "choice":
            if not p.values:
                raise rule(f"{at}.values", "a choice needs a non-empty list of values", "add them")
            p.values = [_as_field(recipe, name, v, f"{at}.values") for v in p.values]
            continue
        if name == "loss":
            continue  # _conditions: a searched loss is a choice
        if (p.type == "int") != (kind is int):
            raise rule(f"{at}.type", f"{name} is {'an integer' if kind is int else 'a float'}",
                       "use int (or choice)" if kind is int else "use uniform or loguniform")
        for end in ("low", "high"):
            if getattr(p, end) is None:
                raise rule(f"{at}.{end}", f"required for type {p.type}", "add it")
            setattr(p, end, _as_field(recipe, name, getattr(p, end), f"{at}.{end}"))
        if not p.low < p.high:
            raise rule(at, f"low must be < high (got low={p.low}, high={p.high})", "swap or widen them")
        if p.type == "loguniform" and p.low <= 0:
            raise rule(f"{at}.low", "must be > 0 for loguniform", "raise it or use uniform", got=p.low)
    _conditions(space, reference_loss)


def _conditions(space, reference_loss):
    """A searched loss is a choice of distillation losses; every other value belongs to the losses that take it
    (Param.losses, filled in when not given). Without a searched loss, every value must suit kd_reference's loss."""
    families = space["loss"].values if "loss" in space else None
    if "loss" in space and (space["loss"].type != "choice" or not set(families) <= NEEDS_TEACHER):
        raise rule("space.loss", f"must be a choice of distillation losses ({', '.join(sorted(NEEDS_TEACHER))}), "
                                 f"got {space['loss'].type} {families or ''}".rstrip())
    for name, p in space.items():
        at, takes = f"space.{name}", losses_taking(name) if name in OPTIONAL_VALUES else None  # None: every loss
        if name == "loss":
            continue
        if families is None:
            if p.losses is not None:
                raise rule(f"{at}.losses", "only with a searched space.loss", f"add space.loss or remove {at}.losses")
            if takes is not None and reference_loss not in takes:
                raise rule(at, f"kd_reference's {reference_loss} loss takes no {name} (only {' and '.join(takes)})",
                           f"search space.loss with {' or '.join(takes)}, or remove {at}")
            continue
        for loss in p.losses or ():
            if loss not in families or (takes is not None and loss not in takes):
                why = "not among space.loss.values" if loss not in families else f"the {loss} loss takes no {name}"
                raise rule(f"{at}.losses", f"{loss}: {why}")
        if p.losses is None and takes is not None:
            p.losses = [loss for loss in families if loss in takes]
            if not p.losses:
                raise rule(at, f"none of space.loss.values takes {name} (only {' and '.join(takes)})",
                           f"add one of them to space.loss, or remove {at}")
