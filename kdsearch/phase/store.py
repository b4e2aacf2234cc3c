"""The cache of trained models and computed tensors, keyed by content.

The teacher, the baselines and the teacher's logits are each computed once and then read back.

A key is a hash of everything that determines the result (data fingerprint, recipe, seed, engine version), so a
changed input misses the cache instead of being served a stale result. Writes go to a temporary file first and
are renamed into place: an interrupted run leaves nothing half-written.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from kdsearch.core.errors import first_line
from kdsearch.core.records import Run
from kdsearch.core.log import log_stderr

ENGINE_VERSION = "2"  # bump when a change to training makes old cached models wrong


def make_key(*parts):
    blob = json.dumps([ENGINE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _atomic(path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredRun:
    """A run read back from the store: its model's state_dict (on the CPU) and its record."""
    state: dict
    run: Run


class Store:
    def __init__(self, root, log=log_stderr):
        self.root, self.log = Path(root), log

    def _paths(self, kind, key):
        d = self.root / kind
        return d / f"{key}.pt", d / f"{key}.json"

    def load_run(self, kind, key):
        """The StoredRun of `key`, or None (also for a damaged entry, which is then recomputed)."""
        pt, js = self._paths(kind, key)
        if not (pt.exists() and js.exists()):
            return None
        try:
            info = json.loads(js.read_text())
            for old, new in (("name", "model"), ("recipe", "config")):  # rows stored before 0.1.1: old keys
                if old in info:
                    info[new] = info.pop(old)
            return StoredRun(self._load(pt), Run.from_json(info, cached=True))
        except Exception as e:  # a truncated or overwritten file fails in many ways; all mean the same
            return self._damaged(pt, js, e)

    def load_tensor(self, kind, key):
        pt = self.root / kind / f"{key}.pt"
        if not pt.exists():
            return None
        try:
            return self._load(pt)
        except Exception as e:
            return self._damaged(pt, None, e)

    @staticmethod
    def _load(pt):
        return torch.load(pt, map_location="cpu", weights_only=True)

    def _damaged(self, pt, js, error):
        self.log(f"cache: {pt} is damaged ({first_line(error, 150)}); "
                 f"recomputing it")
        for p in (pt, js):
            if p is not None:
                p.unlink(missing_ok=True)
        return None

    def save_run(self, kind, key, model, info):
        pt, js = self._paths(kind, key)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        _atomic(pt, lambda p: torch.save(state, p))
        _atomic(js, lambda p: p.write_text(json.dumps(info, indent=1)))  # written last: marks the run complete

    def rows(self, kind, views_key):
        """The row counts of the tables of `views_key` stored so far (add_rows), for a table that serves another."""
        path = self.root / kind / f"{views_key}.rows.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # none yet, or damaged: the tables are then computed, as before
            return []

    def add_rows(self, kind, views_key, rows):
        stored = sorted({*self.rows(kind, views_key), rows})
        _atomic(self.root / kind / f"{views_key}.rows.json", lambda p: p.write_text(json.dumps(stored)))

    def save_tensor(self, kind, key, tensor):
        _atomic(self.root / kind / f"{key}.pt", lambda p: torch.save(tensor.cpu(), p))
