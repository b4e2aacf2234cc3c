"""The search pipeline, one call per stage (`run_search`).

Checks, Ray, the engine phase, the search, the trials, the confirmation over seeds, the report. The trials are run_trial
(trial.py) under Tune (tuner.py); MLflow is tracker.py's."""
import contextlib
import dataclasses
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import torch

from kdsearch.core.errors import UserError
from kdsearch.core.log import log_stderr
from kdsearch.core.names import ROLES
from kdsearch.core.records import COMPLETED
from kdsearch.data.dataset import check_source
from kdsearch.engine.loop import pick_device
from kdsearch.engine.networks import LogitsOnly
from kdsearch.phase.baselines import run_baselines
from kdsearch.phase.context import open_study, resolve_networks
from kdsearch.phase.teacher import logit_mixes
from kdsearch.phase.trial import TrialData
from kdsearch.report import build as reports
from kdsearch.search.cluster import check_address, start_ray, stop_ray
from kdsearch.search.confirm import Workers, confirm
from kdsearch.search.importance import importances
from kdsearch.search.searcher import make_searcher
from kdsearch.search.state import SearchState
from kdsearch.search.tune_callback import trial_callback
from kdsearch.search.tuner import TuneJob, build_tuner, collect_trials, fit
from kdsearch.study.schema import MIXES
from kdsearch.study.space import first_point, space_epochs
from kdsearch.tools.export import save_student
from kdsearch.tracking.store_uri import check_uri, default_uri


@dataclasses.dataclass
class Options:
    """A search's command-line options: its results folder, name, Ray cluster and --resume (--num-samples and
    --confirm-seeds are study values, set in the study by the command line)."""
    results: Path
    name: Optional[str] = None  # default: the study's name
    address: Optional[str] = None  # a Ray cluster to join; default: a local Ray
    resume: bool = False


def run_search(study, study_file, options, log=log_stderr):
    """The whole study: baselines, search, confirmation, report. Returns (report, written paths).

    resume: go on with the interrupted search of this name (state.py has the rules): the engine's results come
    from the store, the MLflow parent run and Tune's trials go on where they stopped."""
    t0 = time.time()
    name, results = options.name or study.name, Path(options.results).resolve()
    device, resources, trial_device, uri = precheck(study, study_file, results, options.address)
    nets = resolve_networks(study, study_file)  # once: the same files' hashes for the record, Ray and MLflow
    state, described = SearchState(results / name), describe(study, nets)
    record = state.begin(described, options.resume, log)
    status, took = "FAILED", {}
    with timed(took, "engine_s"):  # the data (a download included) and the networks, before anything of the search
        ctx = open_study(study, study_file, results, device, log, nets)
    state.lock()
    from kdsearch.tracking.tracker import open_tracker  # MLflow loads here, after the cheap checks (3-4 s)
    tracker = open_tracker(uri, study.tracking.experiment or study.name, results / "mlartifacts")
    dashboard = start_ray(options.address, log, ctx.networks.files)
    record = mark_running(state, record, described, log)
    try:
        with timed(took, "engine_s"):  # and the teacher, baselines and logits, timed once Ray and MLflow are up
            phase = run_baselines(ctx)
            data = trial_data(ctx, phase.table, resources, trial_device)
        networks = networks_info(ctx, phase)
        tracker.start_parent(name, record["search_id"], [study_file, *ctx.networks.files],
                             parent_params(study, networks), phase.rows)
        state.write(stage="the search")
        kd_ref = study.baselines.kd_reference
        job = TuneJob(data, dataclasses.asdict(kd_ref), resources, results / name, space_epochs(study.space, kd_ref))
        with timed(took, "search_s"):
            trials = search_trials(study, job, tracker, options.resume, log)
        state.write(stage="the confirmation")
        with timed(took, "confirm_s"):
            confirmation = confirm(ctx, phase, trials, Workers(data, resources, study.search.max_concurrent), tracker)
        state.write(stage="the report")
        meta = reports.ReportMeta(study.name, name, study.space, importances([t.to_json() for t in trials],
                                  study.space, log), tracker.info(), dashboard, networks)
        report = reports.build(meta, phase.rows, confirmation, trials)
        keep_best(ctx, report, confirmation.student, tracker, results / name)
        figures = reports.render_figures(report, results / name)
        report["timings"] = reports.timings(time.time() - t0, report["trials"], **took)
        written = reports.write(report, results / name, figures)
        tracker.log_report(written)
        status = "FINISHED"
        return report, written
    except KeyboardInterrupt:
        status = "KILLED"
        if tracker.parent is not None:
            tracker.end_lost_and_running(None, "KILLED")
        raise
    finally:
        tracker.close_parent(status)
        state.write(status={"FINISHED": "finished", "KILLED": "interrupted"}.get(status, "failed"))
        if options.address is None:
            stop_ray()


def search_trials(study, job, tracker, resume, log):
    """The search itself: Tune's trials of `job` (a TuneJob) as records, each mirrored into MLflow by `tracker`;
    a UserError when none of them completed."""
    first = first_point(study.space, study.baselines.kd_reference, log)
    tuner = build_tuner(job, make_searcher(study.space, study.search.seed, first), study.search,
                        [trial_callback(tracker, list(study.space), log)], resume)
    trials = collect_trials(fit(tuner), list(study.space))
    tracker.end_lost_and_running({t.trial_id for t in trials}, "KILLED")
    if not any(t.state == COMPLETED for t in trials):
        raise UserError(f"none of the {len(trials)} trials completed; fix: read the trials' errors in "
                        f"{job.folder / 'trials.csv'} and {job.folder / 'ray'}/*/error.txt")
    return trials


def keep_best(ctx, report, student, tracker, folder):
    """kd_best's student logged to MLflow (and registered), and saved in `folder` for kdsearch export; the
    report's `mlflow` then names the registered version."""
    tracker.log_best(report, LogitsOnly.portable(student), _example_input(ctx.data, ctx.views),
                     registered_name(ctx.study), ctx.log)
    report["mlflow"] = tracker.info()
    save_student(folder, student, ctx.networks.student, ctx.data, ctx.views)


@contextlib.contextmanager
def timed(took, key):
    """Add the seconds the block took to took[key]."""
    start = time.time()
    yield
    took[key] = took.get(key, 0.0) + time.time() - start


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


def mark_running(state, record, described, log):
    """The search's record, written as running: a new one (build_tuner replaces the Tune folder of a finished
    search of this name), or the resumed one's. described: the study as a dict."""
    if record is None:
        return state.write(status="running", search_id=uuid.uuid4().hex, study=described,
                           command=" ".join(sys.argv[1:]) or "kdsearch search")
    log(f"search: resuming {state.folder.name!r} ({record['status']} at {record.get('stage', 'the start')})")
    return state.write(status="running")


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


def trial_data(ctx, table, resources, device):
    """The trials' TrialData: numpy NHWC arrays, which Ray shares zero-copy (engine tensors would be copied into
    every trial process), the logit table of each mixing the trials use (table(mix)), with the threads of one
    trial's CPUs."""
    def nhwc(split):
        return split.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), split.y.cpu().numpy()

    (tx, ty), (vx, vy) = nhwc(ctx.data.train), nhwc(ctx.data.val)
    return TrialData(tx, ty, vx, vy, {m: table(m).cpu().numpy() for m in logit_mixes(ctx.study)}, ctx.networks,
                     {m: ctx.views_of(m) for m in MIXES}, device, max(1, int(resources.cpu)))


def networks_info(ctx, phase):
    """The report's `networks`: each network's spec and parameter count, the images' size and class count, and
    whether the notebook's table compares (its networks on CIFAR-10 at 32x32)."""
    student = phase.baselines["student_ce"]
    return {"teacher": {"model": ctx.networks.teacher.spec, "params": phase.teacher.params},
            "student": {"model": ctx.networks.student.spec, "params": student.params},
            "image_size": list(ctx.data.image_size), "classes": len(ctx.data.classes), "notebook": ctx.notebook}


def describe(study, nets):
    """The study as the search's record holds it (JSON), with the key of each of its networks `nets`
    ({role: networks.Network}): for --resume, an edited network file makes another study."""
    keys = {role: n.key for role, n in nets.items()}
    return json.loads(json.dumps({**dataclasses.asdict(study), "networks": keys}))


def registered_name(study):
    """The registered model kd_best's student becomes a version of, or None (tracking.register: false)."""
    return (study.tracking.model_name or f"{study.name}-student") if study.tracking.register else None


def parent_params(study, networks):
    """The MLflow parent's params: the search's size, scheduler and seed, each network's spec and size."""
    return {"num_samples": study.search.num_samples, "scheduler": study.search.scheduler, "seed": study.seed,
            **{f"{role}_{k}": networks[role][k] for role in ROLES for k in ("model", "params")}}


def _example_input(data, views):
    from kdsearch.data.augment import plain_views
    return plain_views(data.val.x, torch.arange(2, device=data.val.x.device), views).contiguous().cpu().numpy()
