"""A search's record on disk: its lock, its status and study, and the rules for --resume.

<results>/<name>/search.json says whether the search of that name is running, interrupted, failed or finished,
with the study it runs (as validated, with the command line's overrides, and its networks' keys) and its MLflow
parent run. A search that did not finish is continued with --resume and only with the same study (one that failed
before any trial ran starts afresh instead); a second search of the same name cannot start while one runs (an OS
lock, released even when the process is killed).
"""
import fcntl
import json
import os
from pathlib import Path

from kdsearch.core.errors import UserError

UNFINISHED = ("running", "interrupted", "failed")


class SearchState:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / "search.json"
        self._lock = None

    def read(self):
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {self.path} ({type(e).__name__}); fix: delete {self.folder} to start "
                            f"the search afresh, or give another --name") from None

    def begin(self, study, resume, log):
        """Apply the rules for --resume; returns the stored record, or None to start afresh. `study`: the study
        as a JSON-able dict. Writes nothing but the lock of an existing search's folder: a new search's folder and
        lock come with `lock()`, once its data and networks are checked. A search that failed before anything of
        it finished (in the engine phase, whose finished runs are stored anyway) starts afresh without --resume,
        and `log` says so."""
        if self.folder.exists():
            self.lock()  # first: a search that runs now must not read as an unfinished one
        return self._check(study, resume, log)

    def lock(self):
        if self._lock is None:
            self._take_lock()

    def _check(self, study, resume, log):
        record, name = self.read(), self.folder.name
        if not resume and record is not None and record["status"] == "failed" and "stage" not in record:
            log(f"search: {name!r} failed before any of its trials ran; starting it afresh (its stored runs are "
                f"reused)")
            return None
        if resume and (record is None or record["status"] == "finished"):
            what = "finished" if record else f"has not started (no {self.path})"
            raise UserError(f"--resume: nothing to resume, the search {name!r} {what}; fix: drop --resume to "
                            f"start it{' again' if record else ''}, or give the --name of an interrupted search")
        if not resume and record is not None and record["status"] in UNFINISHED:
            raise UserError(f"the search {name!r} in {self.folder} did not finish ({record['status']}); fix: "
                            f"add --resume to continue it, or give another --name to start a new one")
        if resume:
            changed = _diff(record["study"], study)
            if "search.control" in changed:  # a search started before the control arm existed records none
                ran = record["study"]["search"].get("control", False)
                raise UserError(f"--resume: the interrupted search {name!r} ran {'with' if ran else 'without'} the "
                                f"CE control arm; fix: resume it {'without' if ran else 'with'} --no-control (or "
                                f"search.control: {str(ran).lower()} in the study file), or give another --name")
            if changed:
                raise UserError(f"--resume: the study differs from the interrupted search's at {', '.join(changed)}"
                                f"; fix: resume with the same study file and options (kdsearch {record['command']}), "
                                f"or give another --name")
            return record
        return None

    def _take_lock(self):
        """Hold the search's lock for the life of this process, or fail in one line if another holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise UserError(f"a search named {self.folder.name!r} is already running (pid {pid}, lock "
                            f"{self.folder / '.lock'}); fix: wait for it to end, or give another --name") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        self._lock = f

    def write(self, **fields):
        record = {**(self.read() or {}), **fields}
        tmp = self.path.with_name(f".search.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, self.path)  # atomic: a kill leaves the old record or the new one
        return record


def _diff(old, new, at=""):
    """The dotted keys where two study dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new)) for k in _diff(old.get(key), new.get(key), f"{at}{key}.")]
    return [at.rstrip(".")] if old != new else []
