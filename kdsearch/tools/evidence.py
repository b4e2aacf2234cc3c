"""The evidence header of every figure kdsearch measures (`kdsearch bench`, `kdsearch train`)."""
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from kdsearch import __version__


def evidence(device, threads):
    """Where and with what a figure was measured: the device, torch, CPU threads and cores, kdsearch's version
    and git commit, Python, the date. The caller adds what it repeated (batches, seeds)."""
    return {"device": f"{device.type}: {_device_name(device)}", "torch": torch.__version__, "cpu_threads": threads,
            "cpu_cores": os.cpu_count(), "kdsearch": __version__, "git_commit": _git_commit(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def _git_commit():
    """The commit of the checkout this package runs from, with -dirty for uncommitted changes; None when it is
    not a git checkout (an installed wheel) or git is missing."""
    root = Path(__file__).resolve().parents[2]  # the checkout holding kdsearch/tools/evidence.py
    if not (root / ".git").exists():
        return None

    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
