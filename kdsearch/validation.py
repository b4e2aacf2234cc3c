"""Dataclasses from YAML mappings, checked against the rules attached to their fields.

Each field carries its rules (choices, bounds, pattern, a parser); `from_dict` checks every one and names the
file, the key path and the fix in a one-line UserError."""
import dataclasses
import re
import typing
from dataclasses import field

from .errors import UserError


def rule(default=dataclasses.MISSING, *, choices=None, gt=None, ge=None, le=None, pattern=None, factory=None,
         parse=None):
    """A dataclass field with validation rules attached (checked by `from_dict`); parse(raw, file, key) builds
    the value of a field that is not a plain value or dataclass."""
    meta = {"choices": choices, "gt": gt, "ge": ge, "le": le, "pattern": pattern, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def from_dict(cls, raw, file, prefix="", base=None):
    """Build dataclass `cls` from a dict, starting from `base` (an instance with the defaults)."""
    if not isinstance(raw, dict):
        raise UserError(f"{file}: {prefix.rstrip('.') or 'top level'}: must be a mapping; fix: indent its keys "
                        f"below it")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"{file}: {prefix}{unknown[0]}: unknown key; fix: use one of {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = prefix + name
        default = getattr(base, name) if base is not None else _default(f)
        if name not in raw:
            if default is dataclasses.MISSING:
                raise UserError(f"{file}: {key}: required key is missing; fix: add it")
            values[name] = default
            continue
        typ = hints[name]
        if f.metadata.get("parse"):
            values[name] = f.metadata["parse"](raw[name], file, key)
        elif dataclasses.is_dataclass(typ):
            values[name] = from_dict(typ, raw[name], file, key + ".", default)
        else:
            values[name] = check(raw[name], typ, f.metadata, file, key)
    return cls(**values)


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def check(value, typ, meta, file, key):
    def fail(msg):
        raise UserError(f"{file}: {key}: {msg} (got {value!r}); fix: edit {key} in {file}")

    optional = typing.get_origin(typ) is typing.Union and type(None) in typing.get_args(typ)
    if optional:
        if value is None:
            return None
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        fail(f"must be {'null or ' if optional else ''}{'a number' if typ is float else 'an ' + typ.__name__ if typ is int else 'a ' + typ.__name__}")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        fail("must be letters, digits, '_', '.' or '-', not starting with '.' (it names a folder)")
    if meta.get("choices") and value not in meta["choices"]:
        fail(f"must be one of {', '.join(meta['choices'])}")
    if meta.get("gt") is not None and not value > meta["gt"]:
        fail(f"must be > {meta['gt']}")
    if meta.get("ge") is not None and not value >= meta["ge"]:
        fail(f"must be >= {meta['ge']}")
    if meta.get("le") is not None and not value <= meta["le"]:
        fail(f"must be <= {meta['le']}")
    return value
