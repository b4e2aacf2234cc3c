"""The search: Ray Tune runs the trials, Optuna (TPE, seeded) proposes them, MLflow records them.

A trial is `kd_trial(config, ...)`: a plain KD training of the student by the engine, whose report callback
hands each epoch's metrics (and a checkpoint) to Tune. The data and the teacher's logit table go into Ray's
object store once, as numpy arrays; every trial reads them zero-copy, so worker nodes need no data files.
"""
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .baselines import open_study, run_baselines
from .config import Recipe
from .errors import UserError
from .data import check_source
from .engine import evaluate, new_model, pick_device, set_threads, to_split, train
from .models import count_params
from .report import format_rows, render
from .runs import log_stderr
from .teacher import logit_epochs, space_epochs, teacher_logits

def kd_trial(config, *, train_x, train_y, val_x, val_y, logits, base, seed, threads, use_gpu, num_classes):
    """One KD training of the student with `config` (the searched values) over `base` (kd_reference's recipe).

    Runs in a Ray worker: reports val_acc and train_loss every epoch, with a checkpoint of the student.
    """
    from ray import tune
    set_threads(threads)
    device = torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")
    with warnings.catch_warnings():  # object-store arrays are read-only; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        train_split, val_split = to_split(train_x, train_y, device), to_split(val_x, val_y, device)
        table = torch.from_numpy(logits).to(device)
    recipe = Recipe(**{**base, **config})
    model = new_model(recipe.model, num_classes, seed, device)
    start = time.time()

    def report(m):
        with tempfile.TemporaryDirectory() as d:
            torch.save(model.state_dict(), os.path.join(d, "student.pt"))
            tune.report({**m, "epochs": recipe.epochs, "train_start": start, "wall": time.time()},
                        checkpoint=tune.Checkpoint.from_directory(d))

    train(model, recipe, train_split, seed=seed, view_seed=seed, val=val_split, teacher_logits=table, report=report)


def optuna_space(space):
    import optuna.distributions as od
    out = {}
    for name, p in space.items():
        if p.type == "choice":
            out[name] = od.CategoricalDistribution(p.values)
        elif p.type == "int":
            out[name] = od.IntDistribution(int(p.low), int(p.high), step=p.step or 1)
        else:
            out[name] = od.FloatDistribution(p.low, p.high, log=p.type == "loguniform")
    return out


def first_point(space, kd_reference, log):
    """kd_reference's settings (by default the notebook's T 4.5, alpha 0.8, lr 1e-3), moved to the nearest
    point of the space, so that the first trial is the reference."""
    point = {}
    for name, p in space.items():
        value = getattr(kd_reference, name)
        if p.type == "choice":
            clipped = value if value in p.values else min(p.values, key=lambda v: abs(v - value))
        else:
            clipped = min(max(value, p.low), p.high)
        if p.type == "int":
            clipped = int(p.low + round((clipped - p.low) / (p.step or 1)) * (p.step or 1))
            clipped = min(clipped, int(p.high))
        if clipped != value:
            log(f"search: kd_reference's {name} = {value} lies outside the space; the first trial uses {clipped}")
        point[name] = clipped
    return point


def _pruning_optuna_search(**kwargs):
    """OptunaSearch that tells Optuna the truth about trials a scheduler stopped early.

    Ray's OptunaSearch reports every trial with a result as COMPLETE, so a trial ASHA stopped after 2 of 30
    epochs would reach TPE as a finished trial with its 2-epoch score. A trial that ran fewer epochs than its
    config asked for (and did not fail) is told to Optuna as PRUNED instead.
    """
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class PruningOptunaSearch(OptunaSearch):
        def on_trial_complete(self, trial_id, result=None, error=False):
            stopped = (not error and result and trial_id not in self._completed_trials
                       and result.get("epoch", 0) < result.get("epochs", 0))
            if not stopped:
                return super().on_trial_complete(trial_id, result, error)
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    return PruningOptunaSearch(**kwargs)


def start_ray(address, log):
    """Join `address`, or start a local Ray on 127.0.0.1 with the dashboard; return the dashboard URL."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables; we print our own lines
    # a forced experiment snapshot per checkpoint is expected here (num_to_keep=1); do not warn about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address is None:
        # Ray's single-node path keeps the node and every listener on 127.0.0.1 (else it binds all interfaces).
        # A local instance listens on loopback only, so we run it without Ray 2.60's token authentication:
        # the dashboard then opens in a browser as is.
        # Ray reads it when imported: nothing in kdsearch imports ray before this point.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    if address is None:
        # "local": a new instance even when RAY_ADDRESS is set or a `ray start` cluster runs on this machine
        ctx = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                       configure_logging=False)
    else:
        try:
            ctx = ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"cannot join the Ray cluster at --address {address} ({type(e).__name__}: "
                            f"{str(e)[:120]}); fix: check the address (ray status on the head node), and set "
                            f"RAY_AUTH_MODE=token if the cluster uses token authentication") from None
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"http://{ctx.dashboard_url}" if ctx.dashboard_url else "(dashboard not available)"
    node = ray.nodes()[0]["NodeManagerAddress"] if address is None else None
    log(f"ray: {f'started a local instance on {node}' if node else 'joined ' + address}; dashboard {url}")
    return url


def make_callback(tracker, space_names, log):
    from ray import tune

    class TrackTrials(tune.Callback):
        """Driver-side: mirrors each trial into an MLflow child run (only the driver writes to MLflow)."""

        def on_trial_start(self, iteration, trials, trial, **info):
            tracker.start_trial(trial.trial_id, f"trial_{trial.trial_id}", trial.config)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tracker.log_epoch(trial.trial_id, result["epoch"], result)
            log(f"trial {trial.trial_id}: epoch {result['epoch']}/{result['epochs']} val {result['val_acc']:.2f}% "
                + " ".join(f"{k}={trial.config[k]:.4g}" for k in space_names if k in trial.config))

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            tracker.end_trial(trial.trial_id, "pruned" if last.get("epoch", 0) < last.get("epochs", 0) else "completed")

        def on_trial_error(self, iteration, trials, trial, **info):
            tracker.end_trial(trial.trial_id, "failed")

    return TrackTrials()


def trial_resources(study, file, address):
    """(cpus, gpus) per trial. On a local Ray they are checked against this machine: Tune would otherwise wait
    forever for resources that do not exist."""
    res, conc = study.resources, study.search.max_concurrent
    on_gpu = pick_device(study.device).type == "cuda"
    gpus = res.gpu if res.gpu is not None else (1 / conc if on_gpu else 0.0)
    if gpus > 1 and gpus != int(gpus):
        raise UserError(f"{file}: resources.gpu: a share above 1 must be a whole number of GPUs (got {gpus}); "
                        f"fix: edit resources.gpu in {file}")
    if gpus > 0 and not on_gpu:
        raise UserError(f"{file}: resources.gpu is {gpus} but the study runs on the CPU (device: {study.device}, "
                        f"{torch.cuda.device_count()} GPU(s) seen); fix: set resources.gpu to 0 or null")
    if address is None and res.cpu > (os.cpu_count() or 1):
        raise UserError(f"{file}: resources.cpu is {res.cpu} but this machine has {os.cpu_count()} cores; fix: "
                        f"lower resources.cpu in {file}")
    return res.cpu, gpus


def run_search(study, study_file, results, name=None, num_samples=None, address=None, log=log_stderr):
    """The whole study: baselines, search, report. Returns (report, written paths)."""
    from . import tracking
    # everything that can be checked cheaply is checked before the hours of teacher and baselines
    cpus, gpus = trial_resources(study, study_file, address)
    check_source(study.data.source, study.data.path)
    t0 = time.time()
    name = name or study.name
    results = Path(results).resolve()
    folder = results / name
    uri = study.tracking.uri or tracking.default_uri(results)
    try:
        tracker = tracking.Tracker(uri, study.tracking.experiment or study.name, results / "mlartifacts")
    except Exception as e:  # an unreachable server, a bad URI, a deleted experiment of that name
        raise UserError(f"cannot use the MLflow store {uri} ({type(e).__name__}: {str(e)[:150]}); fix: check "
                        f"tracking.uri, or restore or rename tracking.experiment") from None
    url = start_ray(address, log)
    status = "FAILED"
    try:
        data, store, device = open_study(study, results)
        rows, teacher, tkey = run_baselines(study, data, store, device, log)
        kd_ref = study.baselines.kd_reference
        logits = teacher_logits(teacher, tkey, data, study.seed, logit_epochs(study), store, log)
        t_engine = time.time()
        num_samples = num_samples or study.search.num_samples
        tracker.start_parent(name, study_file, {"num_samples": num_samples, "scheduler": study.search.scheduler,
                                                "seed": study.seed},
                             [{"name": r["name"], "val_acc": r["val_acc"], "test_acc": r["test_acc"]} for r in rows])
        base = dataclasses.asdict(kd_ref)
        epochs = space_epochs(study.space, kd_ref)
        tuner, searcher = _build_tuner(study, data, logits, base, epochs, num_samples, folder, (cpus, gpus),
                                       make_callback(tracker, list(study.space), log), log)
        grid = tuner.fit()
        trials = _collect_trials(grid, searcher, list(study.space))
        best, best_model, best_row = _best_student(grid, trials, base, data, device, study.seed)
        if best is None:
            raise UserError(f"none of the {len(trials)} trials completed; fix: read the trials' errors in "
                            f"{folder / 'ray'}/*/error.txt")
        report = {
            "study": study.name, "name": name,
            "rows": [{"model": r["name"], "params": r["params"], "val_acc": r["val_acc"], "test_acc": r["test_acc"],
                      "config": r.get("recipe") or {"checkpoint": r.get("checkpoint")}, "history": r.get("history")}
                     for r in rows] + ([best_row] if best_row else []),
            "best_config": best["params"] if best else {},
            "num_trials": len(trials),
            "space": {k: dataclasses.asdict(v) for k, v in study.space.items()},
            "trials": trials,
            "mlflow": {"tracking_uri": uri, "experiment": tracker.experiment, "parent_run_id": tracker.parent,
                       "ui_command": tracking.ui_command(uri)},
            "dashboard": url,
        }
        best_metrics = {"kd_best_val_acc": best["val_acc"], "kd_best_test_acc": best_row["test_acc"]} if best else {}
        example = _example_input(data) if best_model is not None else None
        tracker.log_best(best_metrics, report["best_config"], best_model, example)
        train_s = _union([(t["train_start"], t["train_end"]) for t in trials if t["train_start"]])
        total = time.time() - t0
        report["timings"] = {"total_s": total, "engine_s": t_engine - t0, "trial_training_s": train_s,
                             "overhead_s": total - (t_engine - t0) - train_s,
                             "outside_training_share": (total - (t_engine - t0) - train_s) / total}
        written = render(report, folder)
        tracker.log_report(written)
        status = "FINISHED"
        return report, written
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close_parent(status)
        if address is None:
            import ray
            ray.shutdown()


def _build_tuner(study, data, logits, base, epochs, num_samples, folder, resources, callback, log):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    def numpy_nhwc(split):
        return split.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), split.y.cpu().numpy()

    (tx, ty), (vx, vy) = numpy_nhwc(data.train), numpy_nhwc(data.val)
    cpus, gpus = resources
    trainable = tune.with_resources(
        tune.with_parameters(kd_trial, train_x=tx, train_y=ty, val_x=vx, val_y=vy, logits=logits.cpu().numpy(),
                             base=base, seed=study.seed, threads=max(1, int(cpus)), use_gpu=gpus > 0,
                             num_classes=len(data.classes)),
        {"cpu": cpus, "gpu": gpus})
    searcher = _pruning_optuna_search(space=optuna_space(study.space), metric="val_acc", mode="max",
                                      points_to_evaluate=[first_point(study.space, study.baselines.kd_reference,
                                                                      log)],
                                      seed=study.search.seed)
    scheduler = None
    if study.search.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=epochs,
                                  grace_period=min(study.search.grace_period, epochs),
                                  reduction_factor=study.search.reduction_factor)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, study.search.max_concurrent),
                                    scheduler=scheduler, num_samples=num_samples),
        run_config=tune.RunConfig(name="ray", storage_path=str(folder), verbose=0, callbacks=[callback],
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    return tuner, searcher


def _best_student(grid, trials, base, data, device, seed):
    """The completed trial with the best final validation accuracy, its student (from its last checkpoint) and
    its report row, with the test accuracy measured here, once."""
    done = [t for t in trials if t["state"] == "completed"]
    if not done:
        return None, None, None
    best = max(done, key=lambda t: t["val_acc"])
    recipe = Recipe(**{**base, **best["params"]})
    model = new_model(recipe.model, len(data.classes), seed, device)
    ckpt = next(r for r in grid if r.metrics.get("trial_id") == best["trial_id"]).checkpoint
    with ckpt.as_directory() as d:
        model.load_state_dict(torch.load(os.path.join(d, "student.pt"), map_location=device, weights_only=True))
    row = {"model": "kd_best", "params": count_params(model), "val_acc": best["val_acc"],
           "test_acc": evaluate(model, data.test), "config": dataclasses.asdict(recipe), "history": best["history"]}
    return best, model, row


def _example_input(data):
    from .augment import plain_views
    return plain_views(data.val.x, torch.arange(2, device=data.val.x.device)).contiguous().cpu().numpy()


def _union(intervals):
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _collect_trials(grid, searcher, names):
    """One dict per trial, numbered in Optuna's order, with its Optuna state (completed / pruned / failed)."""
    names_of = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}
    frozen = {t.number: t for t in searcher._ot_study.get_trials(deepcopy=False)}
    states = {tid: (t.number, names_of.get(frozen[t.number].state.name, "failed"))
              for tid, t in searcher._ot_trials.items()}
    trials = []
    for r in grid:
        df = r.metrics_dataframe
        tid = r.metrics.get("trial_id") if r.metrics else None
        number, state = states.get(tid, (len(trials), "failed"))
        history = [] if df is None else [{"epoch": int(e), "val_acc": float(v), "train_loss": float(l)}
                                          for e, v, l in zip(df["epoch"], df["val_acc"], df["train_loss"])]
        trials.append({"number": number, "trial_id": tid, "state": state if r.error is None else "failed",
                       "params": {k: r.config[k] for k in names if k in r.config},
                       "val_acc": history[-1]["val_acc"] if history else None, "epochs_run": len(history),
                       "train_s": r.metrics.get("time_s", 0.0) if r.metrics else 0.0,
                       "train_start": r.metrics.get("train_start") if r.metrics else None,
                       "train_end": r.metrics.get("wall") if r.metrics else None, "history": history})
    return sorted(trials, key=lambda t: t["number"])


def print_summary(report, written, out=sys.stdout):
    print(format_rows(report["rows"]), file=out)
    t = report.get("timings")
    if t:
        print(f"\n{report['num_trials']} trials; {t['total_s']:.0f} s in all: {t['engine_s']:.0f} s data, teacher, "
              f"baselines and logits; {t['trial_training_s']:.0f} s training trials; {t['overhead_s']:.0f} s "
              f"({100 * t['outside_training_share']:.1f}%) outside training (Ray, Optuna, MLflow, reporting)",
              file=out)
    print(f"report: {written[1]}", file=out)
    print(f"MLflow: {report['mlflow']['ui_command']}", file=out)
