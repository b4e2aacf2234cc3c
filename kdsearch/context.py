"""A study's context, made once and passed down: its validated study file, its data on the device, its store
of models and tensors, the device and where progress lines go."""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import Study
from .data import StudyData, load_arrays, prepare
from .engine import set_threads
from .errors import UserError
from .log import log_stderr
from .store import Store


@dataclass
class StudyContext:
    study: Study
    data: StudyData
    store: Store
    device: torch.device
    log: Callable[[str], None] = log_stderr


def open_study(study, results, device, log=log_stderr):
    """Threads, data (decoded once, cached under <results>/cache, then held on `device`) and the store."""
    threads, cfg = set_threads(study.threads), study.data
    cache = Path(results) / "cache"
    start = time.perf_counter()
    arrays = load_arrays(cfg.source, cfg.path, cache)
    load_s = time.perf_counter() - start
    if cfg.val_size + (cfg.train_subset or 1) > len(arrays.train_y):
        raise UserError(f"data.val_size ({cfg.val_size}) + data.train_subset ({cfg.train_subset}) exceed the "
                        f"{len(arrays.train_y)} training images of {cfg.path}; fix: lower them in the study file")
    data = prepare(arrays, cfg.val_size, cfg.train_subset, study.seed, device)
    log(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images, "
        f"{len(data.classes)} classes (loaded in {load_s:.1f} s), on {device}, {threads} CPU threads")
    return StudyContext(study, data, Store(cache, log), device, log)
