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
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from kdsearch.core.errors import UserError
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

    @property
    def key(self):
        if self.kind == "file":
            return f"file:{self.version}:{self.attr}"
        return self.spec + (f"@{self.version}" if self.version else "")

    def build(self, num_classes, image_size):
        if self.kind == "notebook":
            return build_model(self.name, num_classes, image_size)
        if self.kind == "torchvision":
            import torchvision
            return torchvision.models.get_model(self.name, weights=None, num_classes=num_classes)
        if self.kind == "timm":
            return _timm().create_model(self.name, pretrained=False, num_classes=num_classes)
        return getattr(self.module(), self.attr)(num_classes=num_classes)

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

    def build(self, role):
        """A new network of `role` (a recipe's model: teacher or student), with its constructor's initialisation."""
        return getattr(self, role).build(self.num_classes, self.image_size)

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
        _check_stem(path, where)
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


def _check_stem(path, where):
    """A network file ships to Ray's workers as a module named by its stem, first on their path: a stem that
    names another module (torch.py, random.py) would shadow it there. Refused here, before anything runs."""
    try:  # on the path, not among the modules imported: a network file loaded before is one of those
        other = importlib.machinery.PathFinder.find_spec(path.stem)
    except (ImportError, ValueError):
        other = None
    origin = other.origin if other is not None else None
    if origin and Path(origin).is_file() and file_sha(origin) == file_sha(path):
        return  # this very file (from the current folder, or imported already): nothing to hide
    if path.stem in sys.stdlib_module_names or (origin and Path(origin).resolve() != path):
        what = "a standard-library module" if path.stem in sys.stdlib_module_names else f"the module at {origin}"
        raise UserError(f"{where}: {path.name} is named like {what} ({path.stem!r}), which it would hide in Ray's "
                        f"workers; fix: rename the file")


def file_sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


_LOADED = {}  # sha -> module: a file is imported once per process


def load_file(path, sha):
    """The module of a user's network file with this content hash: the copy Ray's runtime environment brought
    (a py_module on the path, importable by the file's stem) when there is one, else the file itself."""
    if sha in _LOADED:
        return _LOADED[sha]
    path, stem = Path(path), Path(path).stem
    copies = [Path(p or ".").resolve() / f"{stem}.py" for p in sys.path]
    for origin in [c for c in copies if c != path] + [path]:
        if origin.is_file() and file_sha(origin) == sha:
            module_name = stem if stem not in sys.modules else f"kdsearch_net_{sha}"
            spec = importlib.util.spec_from_file_location(module_name, origin)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # as an import would: pickling and dataclasses look modules up
            spec.loader.exec_module(module)
            _LOADED[sha] = module
            return module
    raise FileNotFoundError(f"the network file {path} (sha {sha}) is neither on this machine nor brought by Ray's "
                            f"runtime environment, or it changed since the study started")


def _timm(where=None):
    try:
        import timm
    except ImportError:
        raise UserError(f"{where or 'timm'}: timm is not installed; fix: pip install timm (or install kdsearch "
                        f"with its extra: pip install -e '.[timm]')") from None
    return timm
