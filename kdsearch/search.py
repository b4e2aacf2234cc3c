"""The search pipeline, one call per stage (`run_search`).

Checks, Ray, the engine phase, the search, the trials, the confirmation over seeds, the report. The trials are kd_trial
(trial.py) under Tune (tuner.py); MLflow is tracking.py's."""
import dataclasses
import math
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import torch

from . import report as reports
from . import tracking
from .baselines import open_study, run_baselines
from .confirm import confirm
from .data import check_source
from .engine import pick_device
from .errors import UserError
from .importance import importances
from .models import count_params
from .runs import log_stderr
from .teacher import space_epochs
from .state import SearchState
from .trial import error_line, trial_state
from .tuner import NUMBER, build_tuner, check_address, first_point, make_searcher, start_ray, stop_ray


def run_search(study, study_file, results, name=None, num_samples=None, address=None, resume=False,
               log=log_stderr):
    """The whole study: baselines, search, confirmation, report. Returns (report, written paths).

    resume: go on with the interrupted search of this name (state.py has the rules): the engine's results come
    from the store, the MLflow parent run and Tune's trials go on where they stopped."""
    t0 = time.time()
    name, results = name or study.name, Path(results).resolve()
    folder = results / name
    search = dataclasses.replace(study.search, num_samples=num_samples or study.search.num_samples)
    # cheap checks first, before anything is written: a mistake found after the teacher and the baselines costs
    # their hours, and one found after creating the MLflow store leaves it behind
    device = pick_device(study.device)
    resources, trial_device = trial_resources(study.resources, search.max_concurrent, device, study_file, address)
    check_source(study.data.source, study.data.path)
    check_writable(results)
    uri = study.tracking.uri or tracking.default_uri(results)
    tracking.check_uri(uri, study_file)
    if address is not None:
        check_address(address)
    state = SearchState(folder)
    described = dataclasses.asdict(dataclasses.replace(study, search=search))
    record = state.begin(described, resume)
    tracker = tracking.open_tracker(uri, study.tracking.experiment or study.name, results / "mlartifacts")
    dashboard = start_ray(address, log)
    if record is None:  # a new search (build_tuner replaces the Tune folder of a finished one of this name)
        record = state.write(status="running", search_id=uuid.uuid4().hex, study=described,
                             command=" ".join(sys.argv[1:]) or "kdsearch search")
    else:
        log(f"search: resuming {name!r} ({record['status']} at {record.get('stage', 'the start')})")
        state.write(status="running")
    status = "FAILED"
    try:
        t_engine = time.time()  # data, teacher, baselines and logits: the clock starts once Ray and MLflow are up
        data, store = open_study(study.data, study.seed, study.threads, device, results, log)
        rows, table = run_baselines(study.teacher, study.baselines, study.space, study.seed, data, store, log,
                                    need_table=True)
        engine_s = time.time() - t_engine
        tracker.start_parent(name, record["search_id"], study_file, {
            "num_samples": search.num_samples, "scheduler": search.scheduler, "seed": study.seed}, rows)
        state.write(stage="the search")
        kd_ref = study.baselines.kd_reference
        searcher = make_searcher(study.space, search.seed, first_point(study.space, kd_ref, log))
        base = dataclasses.asdict(kd_ref)
        args = _trial_args(data, table, base, study.seed, resources, trial_device)
        tuner = build_tuner(args, resources, searcher, search, space_epochs(study.space, kd_ref), folder,
                            [tracking.trial_callback(tracker, list(study.space), log)], resume)
        t_search = time.time()
        grid = fit(tuner)
        search_s = time.time() - t_search
        trials = collect_trials(grid, list(study.space))
        tracker.end_lost_and_running({t["trial_id"] for t in trials}, "KILLED")
        if not any(t["state"] == "completed" for t in trials):
            raise UserError(f"none of the {len(trials)} trials completed; fix: read the trials' errors in "
                            f"{folder / 'trials.csv'} and {folder / 'ray'}/*/error.txt")
        state.write(stage="the confirmation")
        t_confirm = time.time()
        seeds = [study.seed + i for i in range(study.confirm.seeds)]
        confirmed, best, model = confirm(grid, trials, rows, base, seeds, study.confirm.top_k, data, store,
                                         rows[0]["key"], args, resources, search.max_concurrent, tracker, log)
        confirm_s = time.time() - t_confirm
        state.write(stage="the report")
        report = reports.build(study.name, name, rows, confirmed, best, count_params(model), trials, study.space,
                               importances(trials, study.space, log), tracker.info(), dashboard)
        tracker.log_best(reports.parent_metrics(report), report["best_config"], model, _example_input(data))
        figures = reports.render_figures(report, folder)
        report["timings"] = reports.timings(time.time() - t0, engine_s, trials, search_s, confirm_s)
        written = reports.write(report, folder, figures)
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
        if address is None:
            stop_ray()


def fit(tuner):
    """tuner.fit(), where Ctrl-C raises KeyboardInterrupt after Tune's own graceful stop (trials stopped, a last
    snapshot written to resume from); Tune's fit() would return as if the search were done."""
    before = signal.getsignal(signal.SIGINT)
    grid = tuner.fit()
    interrupted = signal.getsignal(signal.SIGINT) is before  # Tune puts the old handler back on a stop signal
    signal.signal(signal.SIGINT, before)  # and leaves its own installed otherwise
    if interrupted:
        raise KeyboardInterrupt
    return grid


def check_writable(results):
    """The results folder can be made and written (checked without writing anything)."""
    existing = next(p for p in [results, *results.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the results folder {results} ({existing} is not a writable folder); fix: "
                        f"give --results a folder you can write")


def trial_resources(resources, max_concurrent, device, file, address):
    """({"cpu", "gpu"} per trial, the trials' device). On a local Ray they are checked against this machine:
    Tune would otherwise wait forever for resources that do not exist."""
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
    return {"cpu": resources.cpu, "gpu": gpus}, ("cuda" if gpus > 0 else "cpu")


def _trial_args(data, table, base, seed, resources, device):
    """kd_trial's arguments. Numpy, not torch: Ray puts numpy arrays into its object store once and every trial
    reads them zero-copy (a tensor would be copied into each trial process)."""
    def nhwc(split):
        return split.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), split.y.cpu().numpy()

    (tx, ty), (vx, vy) = nhwc(data.train), nhwc(data.val)
    return dict(train_x=tx, train_y=ty, val_x=vx, val_y=vy, logits=table.cpu().numpy(), base=base, seed=seed,
                threads=max(1, int(resources["cpu"])), device=device, num_classes=len(data.classes))


def collect_trials(grid, names):
    """One dict per trial, numbered in Optuna's order, with its state (trial_state: completed, pruned,
    diverged or failed, with the first line of its error) and its per-epoch history."""
    trials = []
    for r in grid:
        df, m = r.metrics_dataframe, r.metrics or {}
        cols = [] if df is None else ["epoch", "val_acc", "train_loss"] + sorted(c for c in df if c.startswith("loss_"))
        rows = [] if df is None else [{c: _number(row[c], int if c == "epoch" else float) for c in cols}
                                      for _, row in df.iterrows()]
        # a trial restored from an older checkpoint reports some epochs again; Tune keeps both rows: the last wins
        history = sorted({h["epoch"]: h for h in rows}.values(), key=lambda h: h["epoch"])
        trials.append({"number": r.config.get(NUMBER, len(trials)), "trial_id": m.get("trial_id"),
                       "state": trial_state(m, r.error is not None),
                       "error": error_line(r.error) if r.error is not None else None,
                       "params": {k: r.config[k] for k in names if k in r.config},
                       "val_acc": history[-1]["val_acc"] if history else None, "epochs_run": len(history),
                       "train_s": m.get("time_s", 0.0), "train_start": m.get("train_start"),
                       "train_end": m.get("wall"), "history": history})
    return sorted(trials, key=lambda t: t["number"])


def _number(value, kind):
    """A metric for report.json, which is plain JSON: a diverged trial's NaN loss becomes null."""
    value = kind(value)
    return value if math.isfinite(value) else None


def _example_input(data):
    from .augment import plain_views
    return plain_views(data.val.x, torch.arange(2, device=data.val.x.device)).contiguous().cpu().numpy()
