"""The search's cheap checks, before anything is written or trained: the device, one trial's resources, the data
source, the results folder, the MLflow store and the Ray cluster."""
import dataclasses
import os

import torch

from kdsearch.core.errors import UserError
from kdsearch.data.dataset import check_source
from kdsearch.engine.loop import pick_device
from kdsearch.search.cluster import check_address
from kdsearch.tracking.store_uri import check_uri, default_uri


def precheck(study, study_file, results, address):
    """The cheap checks, before anything is written: a mistake found after the teacher and the baselines costs
    their hours, and one found after creating the MLflow store leaves it behind. Returns (the study's device,
    the resources of one trial, the trials' device, the MLflow tracking URI)."""
    device = pick_device(study.device)
    resources, trial_device = trial_resources(study.resources, study.search.max_concurrent, device, study_file,
                                              address)
    check_source(study.data.source, study.data.path)
    check_writable(results)
    uri = study.tracking.uri or default_uri(results)
    check_uri(uri, study_file)
    if address is not None:
        check_address(address)
    return device, resources, trial_device, uri


def check_writable(results):
    """The results folder can be made and written (checked without writing anything)."""
    existing = next(p for p in [results, *results.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the results folder {results} ({existing} is not a writable folder); fix: "
                        f"give --results a folder you can write")


def trial_resources(resources, max_concurrent, device, file, address):
    """(the running.Resources of one trial, its GPU share resolved; the trials' device). On a local Ray they
    are checked against this machine: Tune would otherwise wait forever for resources that do not exist."""
    on_gpu = device.type == "cuda"
    gpus = resources.gpu if resources.gpu is not None else (1 / max_concurrent if on_gpu else 0.0)
    if gpus > 1 and gpus != int(gpus):
        raise UserError(f"{file}: resources.gpu: a share above 1 must be a whole number of GPUs (got {gpus}); "
                        f"fix: edit resources.gpu in {file}")
    if gpus > 0 and not on_gpu:
        raise UserError(f"{file}: resources.gpu is {gpus} but the study runs on the CPU (device: {device}, "
                        f"{torch.cuda.device_count()} GPU(s) seen); fix: set resources.gpu to 0 or null")
    if address is None and resources.cpu > (os.cpu_count() or 1):
        raise UserError(f"{file}: resources.cpu is {resources.cpu} but this machine has {os.cpu_count()} cores; "
                        f"fix: lower resources.cpu in {file}")
    return dataclasses.replace(resources, gpu=gpus), ("cuda" if gpus > 0 else "cpu")
