"""The study's networks checked before anything is written or trained: each built and run on two images of the
data's size (`check`), and a teacher checkpoint fitted into the teacher's network (`load_teacher_checkpoint`).
Each mistake is one UserError line naming the key, what is wrong and the fix."""
import torch

from kdsearch.core.errors import UserError, first_line
from kdsearch.core.names import ROLES
from kdsearch.engine.models import MODELS, count_params
from kdsearch.engine.networks import logits_of


def check(networks, where):
    """Build both networks and run each on a batch of two images of the data's size, on the CPU: a constructor
    or forward that raises, an output that is not (2, N) logits, a teacher and student that disagree on N: one
    UserError naming where[role] (FILE: models.ROLE). Returns {role: parameter count}."""
    h, w = networks.image_size
    counts = {}
    for role in ROLES:
        net, at = getattr(networks, role), where[role]
        if net.kind == "notebook" and min(h, w) < MODELS[net.name].min_size:
            raise UserError(f"{at}: the notebook's {net.name} needs images of at least {MODELS[net.name].min_size}"
                            f"x{MODELS[net.name].min_size} (the data's are {h}x{w}); fix: set data.image_size, or "
                            f"name another network")
        if net.kind in ("file", "module"):
            source = net.spec.rpartition(":")[0]
            try:
                module = net.module()
            except Exception as e:
                raise UserError(f"{at}: importing {source} raised {first_line(e, 150)}; fix: install what it "
                                f"imports, or correct {source}") from None
            if not callable(getattr(module, net.attr, None)):
                raise UserError(f"{at}: {source} has no callable {net.attr!r}; fix: define {net.attr}(num_classes) "
                                f"in it, or name the one it has") from None
        try:
            model = networks.build(role)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{at}: building {net.spec} (num_classes={networks.num_classes}) raised "
                            f"{first_line(e, 150)}; fix: make {net.spec} build a network "
                            f"for num_classes={networks.num_classes}") from None
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"{at}: {net.spec} returned a {type(model).__name__}, not a torch.nn.Module; fix: make "
                            f"it return the network")
        try:
            with torch.no_grad():
                out = logits_of(model.eval()(torch.zeros(2, 3, h, w)))
        except Exception as e:
            raise UserError(f"{at}: {net.spec} fails on a batch of 2 images of 3x{h}x{w} ({first_line(e, 150)}); "
                            f"fix: make it take (B, 3, {h}, {w}) float images, or set "
                            f"data.image_size") from None
        if tuple(out.shape) != (2, networks.num_classes):
            raise UserError(f"{at}: {net.spec} gives logits of shape {tuple(out.shape)} for 2 images, not (2, "
                            f"{networks.num_classes}) for the data's {networks.num_classes} classes; fix: build "
                            f"its head with num_classes")
        counts[role] = count_params(model)
    return counts


def load_teacher_checkpoint(path, networks, device):
    """The study's teacher network (networks.Networks) with a state_dict saved by torch.save(model.state_dict(),
    path), read with weights_only=True. Missing or unexpected keys and shape mismatches are one line naming the
    first few."""
    spec = networks.teacher.spec
    fix = f"give a state_dict of {spec} for {networks.num_classes} classes as teacher.checkpoint"
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist; fix: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a file that is not a checkpoint; all mean the same
        raise UserError(f"teacher checkpoint {path} cannot be read ({first_line(e, 150)}); fix: {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"teacher checkpoint {path} is not a state_dict of tensors; fix: {fix}")
    model = networks.build("teacher").to(device, memory_format=torch.channels_last)
    wanted = model.state_dict()
    wrong = [_listed("missing", [k for k in wanted if k not in state]),
             _listed("unexpected", [k for k in state if k not in wanted]),
             _listed("of another shape", [f"{k} {tuple(state[k].shape)} (not {tuple(v.shape)})"
                                          for k, v in wanted.items() if k in state and state[k].shape != v.shape])]
    wrong = [w for w in wrong if w]
    if wrong:
        raise UserError(f"teacher checkpoint {path} does not fit {spec} with {networks.num_classes} classes: "
                        f"{'; '.join(wrong)}; fix: {fix}")
    model.load_state_dict(state)
    return model


def _listed(what, keys, first=3):
    if not keys:
        return ""
    more = f" and {len(keys) - first} more" if len(keys) > first else ""
    return f"{len(keys)} key(s) {what}: {', '.join(keys[:first])}{more}"
