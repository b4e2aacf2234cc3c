"""The study's two networks, each named by one string (models.teacher, models.student), and built for the data.

A spec is one of:
- `teacher`, `student`: the notebook's networks (models.py), built for the data's image size;
- `torchvision:NAME`: torchvision.models.get_model(NAME, weights=None, num_classes=N);
- `timm:NAME`: timm.create_model(NAME, pretrained=False, num_classes=N) (timm is an optional extra);
- `FILE.py:CALLABLE`, a file of the user's (a relative path is taken from the study file's folder), or
  `package.module:CALLABLE`, importable: CALLABLE(num_classes=N) returns the nn.Module.

N is the data's class count. A network maps float images (B, 3, H, W) to logits (B, N); `logits_of` is the one
rule for other outputs. A user's file reaches Ray's workers through Ray's runtime environment (cluster.py ships
it as a py_module, where it imports by its file's stem), never through a shared file system; wherever it is
imported, its content must hash as it did when the study started. Imports torch only (torchvision or timm when a
spec names them): no Ray, Optuna or MLflow.
"""
import copy
import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from kdsearch.core.errors import UserError
from kdsearch.engine import pretrained
from kdsearch.engine.netfiles import check_stem, file_sha, load_file
from kdsearch.engine.models import MODELS, build_model

SPECS = "teacher, student, torchvision:NAME, timm:NAME, FILE.py:CALLABLE or package.module:CALLABLE"


def logits_of(out):
    """A network's logits from its output: a tensor is the logits; a tuple or list gives its first element
    (torchvision's GoogLeNet and Inception return (logits, aux, ...) in training); a dict, or an object with
    attributes, gives its `logits` entry (Hugging Face's model outputs). Anything else is refused."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    found = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    raise TypeError(f"the network returned a {type(out).__name__}, not logits (a tensor, a tuple or list whose "
                    f"first element is one, or a dict or object with a `logits` tensor)")


class LogitsOnly(torch.nn.Module):
    """A network whose output is its logits alone (by logits_of): the student as it is logged to deploy."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return logits_of(self.net(x))

    @classmethod
    def portable(cls, net):
        """A float32 CPU copy in eval mode, as MLflow logs the student to deploy (its example input is a CPU
        array); `net` itself stays where it trains."""
        return cls(copy.deepcopy(net).float().cpu().eval()).eval()


@dataclass(frozen=True)
class Network:
    """One network as its spec names it. kind: notebook, torchvision, timm, file or module; name: the model's
    name, the file's absolute path or the module's; attr: the callable of a file or module; version: what makes
    the same spec build another network: a file's (or a module's file's) content hash, torchvision's or timm's
    version. The key is what cache keys hold: an edited file trains again, however its path is spelt."""
    spec: str
    kind: str
    name: str
    attr: str = ""
    version: str = ""
    weights: str = ""  # pretrained weights' canonical name (pretrained.resolve_weights), or ""
    init: str = ""  # a state_dict file to start from (its absolute path), or ""
    init_sha: str = ""  # that file's content hash, part of the key
    norm: tuple = ()  # (mean, std) the study file states these weights expect, or ()

    @property
    def key(self):
        base = f"file:{self.version}:{self.attr}" if self.kind == "file" else (
            self.spec + (f"@{self.version}" if self.version else ""))
        return base + (f"+weights={self.weights}" if self.weights else "") + (
            f"+init={self.init_sha}" if self.init else "")  # a network from random weights keeps its old key

    def build(self, num_classes, image_size):
        """The network for `num_classes` classes, its weights where they start (`start`)."""
        model = self.architecture(num_classes, image_size)
        self.start(model, num_classes)
        return model

    def architecture(self, num_classes, image_size):
        """The network as its constructor builds it (timm's pretrained weights included: timm fits the head)."""
        if self.kind == "notebook":
            return build_model(self.name, num_classes, image_size)
        if self.kind == "torchvision":
            import torchvision
            return torchvision.models.get_model(self.name, weights=None, num_classes=num_classes)
        if self.kind == "timm":
            return _timm().create_model(self.name, pretrained=bool(self.weights), num_classes=num_classes)
        return getattr(self.module(), self.attr)(num_classes=num_classes)

    def start(self, model, num_classes, where=None):
        """Load the starting weights (torchvision's named ones, or the init file) into `model` by the head rule;
        return the tensors left fresh, or None when it starts as its constructor built it."""
        where = where or self.spec
        if self.init:
            state = pretrained.read_state(self.init, f"{where}.init")
            if file_sha(self.init) != self.init_sha:
                raise UserError(f"{where}.init: {self.init} changed since the study started; fix: restore it, or "
                                f"start a new search")
            return pretrained.fit_state(model, state, f"{where}.init: {self.init}", num_classes)
        if self.weights and self.kind == "torchvision":
            state = pretrained.weights_state(self.weights, where)
            return pretrained.fit_state(model, state, f"{where}.weights: {self.weights}", num_classes)
        return None

    def expected_norm(self):
        """The (mean, std) this network's starting weights expect: the study file's, else the named weights'
        own; None for random weights or an init file without them."""
        if self.norm:
            return self.norm
        return pretrained.weights_norm(self.kind, self.name, self.weights) if self.weights else None

    def module(self):
        """The module of a file or module network (imported once)."""
        return importlib.import_module(self.name) if self.kind == "module" else load_file(self.name, self.version)


@dataclass(frozen=True)
class Networks:
    """The study's teacher and student, for data of `num_classes` classes and `image_size` (H, W)."""
    teacher: Network
    student: Network
    num_classes: int
    image_size: tuple

    def build(self, role, start=True):
        """A new network of `role` (a recipe's model: teacher or student), its weights where they start (or, with
        start False, as its constructor built them: for weights about to be replaced by stored ones)."""
        net = getattr(self, role)
        return (net.build if start else net.architecture)(self.num_classes, self.image_size)

    def key(self, role):
        """What names the network of `role` in cache keys (a file's content hash included)."""
        return getattr(self, role).key

    @property
    def notebook(self):
        """Both are the notebook's networks (the report's notebook column compares with them)."""
        return self.teacher.kind == self.student.kind == "notebook"

    @property
    def files(self):
        """The users' network files, which Ray ships to its workers."""
        return sorted({n.name for n in (self.teacher, self.student) if n.kind == "file"})


def notebook_networks(num_classes=10, image_size=(32, 32)):
    """The notebook's teacher and student (the study defaults)."""
    return Networks(Network("teacher", "notebook", "teacher"), Network("student", "notebook", "student"),
                    num_classes, tuple(image_size))


def resolve(spec, base_dir, where):
    """The Network a spec names; a spec that does not resolve is a UserError naming `where` (FILE: models.ROLE)."""
    if spec in MODELS:
        return Network(spec, "notebook", spec)
    if spec.startswith("torchvision:"):
        import torchvision
        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):  # classifiers only
            raise UserError(f"{where}: torchvision has no classification model {name!r}; fix: name one of "
                            f"torchvision.models.list_models(module=torchvision.models), e.g. torchvision:resnet18")
        return Network(spec, "torchvision", name, version=torchvision.__version__)
    if spec.startswith("timm:"):
        timm, name = _timm(where), spec.split(":", 1)[1]
        if name not in timm.list_models():
            raise UserError(f"{where}: timm has no model {name!r}; fix: name one of timm.list_models(), e.g. "
                            f"timm:resnet18")
        return Network(spec, "timm", name, version=timm.__version__)
    prefix, colon, rest = spec.rpartition(":")  # the last colon: a path may hold one (C:/nets/net.py:Net)
    if not colon or not prefix or not rest:
        raise UserError(f"{where}: {spec!r} is not a network; fix: give one of {SPECS}")
    if not rest.isidentifier():
        raise UserError(f"{where}: {rest!r} in {spec!r} is not a Python name; fix: give FILE.py:CALLABLE or "
                        f"package.module:CALLABLE")
    if prefix.endswith(".py"):
        path = Path(prefix).expanduser()
        path = (path if path.is_absolute() else Path(base_dir) / path).resolve()
        if not path.is_file():
            raise UserError(f"{where}: the network file {path} does not exist; fix: give the path of a .py file "
                            f"(a relative one is taken from the study file's folder)")
        if not path.stem.isidentifier():
            raise UserError(f"{where}: {path.name} cannot be imported (its name is not a Python name); fix: "
                            f"rename it, e.g. to {''.join(c if c.isalnum() else '_' for c in path.stem)}.py")
        check_stem(path, where)
        return Network(spec, "file", str(path), rest, file_sha(path))
    if not all(part.isidentifier() for part in prefix.split(".")):
        raise UserError(f"{where}: {prefix!r} in {spec!r} is neither a .py file nor a module name; fix: give "
                        f"FILE.py:CALLABLE or package.module:CALLABLE")
    try:
        found = importlib.util.find_spec(prefix)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(f"{where}: no module {prefix!r} can be imported here; fix: install it (on every Ray node "
                        f"too), or give its file as FILE.py:{rest}")
    origin = found.origin if found.origin and Path(found.origin).is_file() else None
    return Network(spec, "module", prefix, rest, file_sha(origin) if origin else "")


def resolve_entry(entry, base_dir, where):
    """The Network of a study's network entry (study.inputs.NetworkEntry: spec, weights, init, mean, std): its
    named weights resolved to their canonical name, its init file to an absolute path and hash."""
    net = resolve(entry.spec, base_dir, where)
    if (entry.mean is None) != (entry.std is None):
        raise UserError(f"{where}: mean and std go together; fix: give both, or neither")
    if entry.weights and entry.init:
        raise UserError(f"{where}: weights and init both say where the weights start; fix: give one of them")
    weights = pretrained.resolve_weights(net.kind, net.name, entry.weights, where) if entry.weights else ""
    init, sha = "", ""
    if entry.init:
        path = Path(entry.init).expanduser()
        init = str((path if path.is_absolute() else Path(base_dir) / path).resolve())
        if not Path(init).is_file():
            raise UserError(f"{where}.init: {init} does not exist; fix: give the path of a state_dict (.pt) file "
                            f"(a relative one is taken from the study file's folder)")
        sha = file_sha(init)
    norm = (tuple(entry.mean), tuple(entry.std)) if entry.mean is not None else ()
    return dataclasses.replace(net, weights=weights, init=init, init_sha=sha, norm=norm)


def _timm(where=None):
    try:
        import timm
    except ImportError:
        raise UserError(f"{where or 'timm'}: timm is not installed; fix: pip install timm (or install kdsearch "
                        f"with its extra: pip install -e '.[timm]')") from None
    return timm
