"""The study's networks checked before anything is written or trained: each built and run on two images of the
data's size (`check`), and a teacher checkpoint fitted into the teacher's network (`load_teacher_checkpoint`).
Each mistake is one UserError line naming the key, what is wrong and the fix."""
import torch

from kdsearch.core.errors import UserError, first_line
from kdsearch.core.names import ROLES
from kdsearch.engine import pretrained
from kdsearch.engine.models import MODELS, count_params
from kdsearch.engine.networks import logits_of


def check(networks, where, log=None, roles=ROLES):
    """Build both networks, their starting weights loaded (a file that does not fit is one line), and run each on
    a batch of two images of the data's size, on the CPU: a constructor or forward that raises, an output that is
    not (2, N) logits, a teacher and student that disagree on N: one UserError naming where[role] (FILE:
    models.ROLE). `log` hears where each network's weights start. roles: the ones to check. Returns {role:
    parameter count}."""
    h, w = networks.image_size
    counts = {}
    for role in roles:
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
            model = net.architecture(networks.num_classes, networks.image_size)
            fresh = net.start(model, networks.num_classes, at)
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
        if log and fresh is not None:
            log(start_line(net, fresh, at, len(model.state_dict()), networks.num_classes))
    return counts


def start_line(net, fresh, at, tensors, num_classes):
    """Where a network's weights start, in one line: which file, how many tensors loaded, which built fresh."""
    source = net.init or net.weights
    head = (f"; {', '.join(fresh)} built fresh for the study's {num_classes} classes" if fresh else "")
    return f"{at}: starts from {source} ({tensors - len(fresh)} of {tensors} tensors loaded{head})"


def load_teacher_checkpoint(path, networks, device):
    """The study's teacher network (networks.Networks) with a state_dict saved by torch.save(model.state_dict(),
    path), read with weights_only=True. Missing or unexpected keys and shape mismatches are one line naming the
    first few."""
    spec = networks.teacher.spec
    fix = f"give a state_dict of {spec} for {networks.num_classes} classes as teacher.checkpoint"
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist; fix: {fix}")
    try:
        state = pretrained.read_state(path, "teacher checkpoint")
    except UserError as e:
        raise UserError(f"{str(e).split('; fix: ')[0]}; fix: {fix}") from None
    model = networks.teacher.architecture(networks.num_classes, networks.image_size)
    _, wrong = pretrained.misfit(model.state_dict(), state)
    if wrong:
        raise UserError(f"teacher checkpoint {path} does not fit {spec} with {networks.num_classes} classes: "
                        f"{wrong}; fix: {fix}")
    model.load_state_dict(state)
    return model.to(device, memory_format=torch.channels_last)
