"""A user's network file: its content hash (what its cache keys hold), the check that its name hides no other
module in Ray's workers, and its import (once per process, from the copy Ray's runtime environment brought when
there is one). Imports nothing of torch."""
import hashlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

from kdsearch.core.errors import UserError


def check_stem(path, where):
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
