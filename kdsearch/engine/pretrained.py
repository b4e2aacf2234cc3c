"""Where a network's weights start: pretrained weights named as the library names them (`weights`), a state_dict
file of the user's (`init`), or random (neither).

Either is loaded into the network built for the study's classes by one rule, the head rule: every tensor of the
same name and shape is loaded; a tensor whose shape differs in its first dimension alone, where the network has
the study's class count (a classifier head trained for other classes), stays as built, fresh; anything else that
does not fit (a missing or unexpected key, another shape) is the wrong file, refused in one line. torchvision's
weights come from torch's hub cache (TORCH_HOME), downloaded there when missing, as any torchvision user's.
Imports torch only (torchvision or timm when a spec names them).
"""
import os
from pathlib import Path

import torch

from kdsearch.core.errors import UserError, first_line


def resolve_weights(kind, name, weights, where):
    """The canonical name of `weights` for a network of `kind` (torchvision, timm) and model `name`: a torchvision
    enum member's full name (DEFAULT resolved: ResNet18_Weights.IMAGENET1K_V1), or timm's `pretrained`."""
    if kind == "timm":
        if weights != "pretrained":
            raise UserError(f"{where}.weights: timm names its weights `pretrained` (got {weights!r}); fix: write "
                            f"weights: pretrained")
        return "pretrained"
    if kind != "torchvision":
        raise UserError(f"{where}.weights: only torchvision and timm networks have named weights; fix: give your "
                        f"weights as init: FILE.pt")
    import torchvision
    enum = torchvision.models.get_model_weights(name)
    if weights not in enum.__members__:
        raise UserError(f"{where}.weights: {name} has no weights {weights!r}; fix: name one of "
                        f"{', '.join(enum.__members__)}")
    member = enum[weights]
    return f"{type(member).__name__}.{member.name}"


def hub_file(weights):
    """Where torch's hub cache holds torchvision's `weights` (a canonical name): the file it loads from."""
    import torchvision
    url = torchvision.models.get_weight(weights).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def weights_state(weights, where):
    """The state_dict of torchvision's `weights`, from the hub cache (downloaded there when missing)."""
    import torchvision
    path, member = hub_file(weights), torchvision.models.get_weight(weights)
    if not path.is_file():
        try:
            member.get_state_dict(progress=False)  # downloads into the hub cache
        except Exception as e:
            raise UserError(f"{where}.weights: {path} is not there and cannot be downloaded ({first_line(e, 120)}); "
                            f"fix: place the file {member.url} there (TORCH_HOME sets the folder)") from None
    return read_state(path, f"{where}.weights")


def read_state(path, where):
    """A state_dict of tensors saved by torch.save, read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{where}: {path} does not exist; fix: give the path of a state_dict (.pt) file (a relative "
                        f"one is taken from the study file's folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a file that is not a checkpoint; all mean the same
        raise UserError(f"{where}: {path} cannot be read ({first_line(e, 150)}); fix: save one with "
                        f"torch.save(model.state_dict(), PATH)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{where}: {path} is not a state_dict of tensors; fix: save one with "
                        f"torch.save(model.state_dict(), PATH)")
    return state


def fit_state(model, state, where, head):
    """Load `state` into `model` by the head rule (the module's docstring; `head`: the study's class count).
    Returns the names of the tensors left as built (the fresh head)."""
    fresh, wrong = misfit(model.state_dict(), state, head)
    if wrong:
        raise UserError(f"{where} does not fit the network: {wrong}; fix: give weights of this very architecture")
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    return fresh


def misfit(wanted, state, head=None):
    """(the tensors of `wanted` a head of another class count leaves fresh, with `head` the study's class count;
    what else does not fit, in words, or "")."""
    fresh = [k for k, v in wanted.items() if head and k in state and state[k].shape != v.shape and v.dim() > 0
             and v.shape[0] == head and state[k].shape[1:] == v.shape[1:]]
    wrong = [_listed("missing", [k for k in wanted if k not in state]),
             _listed("unexpected", [k for k in state if k not in wanted]),
             _listed("of another shape", [f"{k} {tuple(state[k].shape)} (not {tuple(v.shape)})"
                                          for k, v in wanted.items()
                                          if k in state and state[k].shape != v.shape and k not in fresh])]
    return fresh, "; ".join(w for w in wrong if w)


def _listed(what, keys, first=3):
    if not keys:
        return ""
    more = f" and {len(keys) - first} more" if len(keys) > first else ""
    return f"{len(keys)} key(s) {what}: {', '.join(keys[:first])}{more}"


def weights_norm(kind, name, weights):
    """The (mean, std) the named weights were trained under: torchvision's weights.transforms(), timm's
    pretrained_cfg; None when they do not say."""
    if kind == "torchvision":
        import torchvision
        t = torchvision.models.get_weight(weights).transforms()
        return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    if kind == "timm":
        from timm import create_model
        cfg = create_model(name, pretrained=False).pretrained_cfg
        return tuple(cfg["mean"]), tuple(cfg["std"])
    return None
