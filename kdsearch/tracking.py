"""Everything kdsearch writes to MLflow, and the Tune callback that writes the trials, in the driver only.

Only the driver writes (an sqlite store does not like many writers).

One experiment per study; one parent run per search (the study file, the baselines' metrics, the best result
and the report); one child run per trial, tagged with mlflow.parentRunId, holding its parameters, its per-epoch
val_acc, train_loss and loss terms (loss_hard, loss_soft for KD), and its final status.
"""
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # send nothing off this machine

import mlflow  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from .errors import UserError  # noqa: E402


def default_uri(results):
    return f"sqlite:///{Path(results).resolve() / 'mlflow.db'}"


def open_tracker(uri, experiment, artifact_root):
    """A Tracker on `uri`, or a UserError naming the store: a cheap check before anything is trained."""
    try:
        return Tracker(uri, experiment, artifact_root)
    except Exception as e:  # an unreachable server, a bad URI, a deleted experiment of that name
        raise UserError(f"cannot use the MLflow store {uri} ({type(e).__name__}: {str(e)[:150]}); fix: check "
                        f"tracking.uri, or restore or rename tracking.experiment") from None


def ui_command(uri):
    return f"mlflow ui --backend-store-uri {uri}" if "://" not in uri or uri.startswith(("sqlite:", "file:")) \
        else f"open {uri} in a browser"


class Tracker:
    def __init__(self, uri, experiment, artifact_root):
        self.uri = uri
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ValueError(f"experiment {experiment!r} was deleted; restore it (mlflow experiments restore) or "
                             f"choose another tracking.experiment")
        if exp is None:
            # an absolute artifact location: otherwise sqlite stores put artifacts under the caller's cwd
            root = Path(artifact_root).resolve() / experiment
            exp_id = self.client.create_experiment(experiment, artifact_location=root.as_uri())
        else:
            exp_id = exp.experiment_id
        self.experiment, self.experiment_id = experiment, exp_id
        self.parent = None
        self.children = {}  # trial id -> run id
        self.confirm_runs = {}  # (model, seed) -> run id

    def info(self):
        return {"tracking_uri": self.uri, "experiment": self.experiment, "parent_run_id": self.parent,
                "ui_command": ui_command(self.uri)}

    def start_parent(self, run_name, study_file, params, baseline_rows):
        """baseline_rows: report rows (model, val_acc, test_acc), logged as <model>_val_acc, <model>_test_acc."""
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={"kdsearch.kind": "search"})
        self.parent = run.info.run_id
        self.client.log_artifact(self.parent, str(study_file))
        for k, v in params.items():
            self.client.log_param(self.parent, k, v)
        metrics = [Metric(f"{r['model']}_{m}", r[m], 0, 0) for r in baseline_rows for m in ("val_acc", "test_acc")]
        self.client.log_batch(self.parent, metrics=metrics)
        return self.parent

    def start_trial(self, trial_id, name, params):
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent, "kdsearch.trial_id": trial_id,
                                           "kdsearch.stage": "search"})
        self.children[trial_id] = run.info.run_id
        self.client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])

    def log_epoch(self, trial_id, epoch, metrics):
        # one call per epoch: each sqlite write is its own transaction
        ts = int(metrics.get("wall", 0) * 1000)
        names = ["val_acc", "train_loss"] + sorted(k for k in metrics if k.startswith("loss_"))
        self.client.log_batch(self.children[trial_id],
                              metrics=[Metric(k, float(metrics[k]), ts, epoch) for k in names])

    def end_trial(self, trial_id, state):
        """state: completed, pruned or failed (an MLflow tag; the run status is FINISHED, KILLED or FAILED)."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        self.client.set_tag(run_id, "kdsearch.state", state)
        status = {"completed": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(run_id, status)

    def log_confirm_run(self, model, config, seed, history, test_acc=None, cached=False):
        """A confirmation run: a child run tagged kdsearch.stage=confirm, with its recipe, seed and per-epoch
        metrics; test_acc when known (else log_confirm_test adds it at the end of the stage)."""
        run = self.client.create_run(self.experiment_id, run_name=f"confirm_{model}_seed{seed}",
                                     tags={"mlflow.parentRunId": self.parent, "kdsearch.stage": "confirm",
                                           "kdsearch.model": model, "kdsearch.cached": str(cached).lower()})
        self.confirm_runs[(model, seed)] = run.info.run_id
        params = [mlflow.entities.Param(k, str(v)) for k, v in {**config, "seed": seed}.items()]
        names = ["val_acc", "train_loss"] + sorted(k for k in history[-1] if k.startswith("loss_"))
        metrics = [Metric(k, float(h[k]), 0, h["epoch"]) for h in history for k in names if h.get(k) is not None]
        self.client.log_batch(run.info.run_id, params=params, metrics=metrics)
        if test_acc is not None:
            self.log_confirm_test(model, seed, test_acc)
        self.client.set_terminated(run.info.run_id, "FINISHED")

    def log_confirm_test(self, model, seed, test_acc):
        self.client.log_metric(self.confirm_runs[(model, seed)], "test_acc", test_acc)

    def log_best(self, best_metrics, best_params, model, input_example):
        """The final summary (means over seeds: step 1, after the study seed's values at step 0), the best
        settings and the kd_best model."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent, metrics=[Metric(k, v, now, 1) for k, v in best_metrics.items()],
                              params=[mlflow.entities.Param(f"best_{k}", str(v)) for k, v in best_params.items()])
        if model is not None:
            import copy
            import warnings
            import torch
            model = copy.deepcopy(model).float().cpu().eval()  # the example input is a CPU array
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=self.parent), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch.export's notes on a CPU-only model
                # an explicit requirement list skips MLflow's 4-5 s dependency inference
                mlflow.pytorch.log_model(model, name="kd_best", input_example=input_example,
                                         pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])

    def log_report(self, paths):
        for f in paths:
            self.client.log_artifact(self.parent, str(f), artifact_path="report")

    def close_parent(self, status):
        """FINISHED, KILLED (interrupted) or FAILED; never left RUNNING."""
        if self.parent is not None:
            self.client.set_terminated(self.parent, status)


def trial_callback(tracker, searcher, space_names, log):
    """A Tune callback, in the driver, that mirrors each trial into an MLflow child run and prints its epochs.
    A trial's final state is the searcher's (make_searcher), which Tune updates before calling back."""
    from ray import tune

    class TrackTrials(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            tracker.start_trial(trial.trial_id, f"trial_{trial.trial_id}", trial.config)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tracker.log_epoch(trial.trial_id, result["epoch"], result)
            log(f"trial {trial.trial_id}: epoch {result['epoch']}/{result['epochs']} val {result['val_acc']:.2f}% "
                + " ".join(f"{k}={trial.config[k]:.4g}" for k in space_names if k in trial.config))

        def on_trial_complete(self, iteration, trials, trial, **info):
            tracker.end_trial(trial.trial_id, searcher.trials.get(trial.trial_id, (None, "failed"))[1])

        def on_trial_error(self, iteration, trials, trial, **info):
            tracker.end_trial(trial.trial_id, "failed")

    return TrackTrials()
