"""Everything kdsearch writes to MLflow, in the driver only (tune_callback.py calls it for the trials).

Only the driver writes (an sqlite store does not like many writers).

One experiment per study; one parent run per search (the study file, the baselines' metrics, the best result
and the report); one child run per trial, tagged with mlflow.parentRunId, holding its parameters, its per-epoch
val_acc, train_loss and loss terms (loss_hard, loss_soft for KD), and its final status.
"""
import math
import os
import time
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # send nothing off this machine

import mlflow  # noqa: E402
from mlflow.entities import Metric, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from kdsearch.core.errors import UserError, first_line  # noqa: E402
from kdsearch.core.records import COMPLETED, PRUNED, curve_names  # noqa: E402
from kdsearch.tracking.registry import register  # noqa: E402
from kdsearch.tracking.store_uri import ui_command  # noqa: E402

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # a model-training experiment, to the UI
ACCURACIES = ("val_acc", "test_acc")  # a model's accuracies on the parent run, as <model>_<accuracy>[_mean|_sd]


def metric_name(model, accuracy, stat=""):
    return f"{model}_{accuracy}{stat}"


def open_tracker(uri, experiment, artifact_root):
    """A Tracker on `uri`, or a UserError naming the store: a cheap check before anything is trained."""
    try:
        return Tracker(uri, experiment, artifact_root)
    except Exception as e:  # an unreachable server, a bad URI, a deleted experiment of that name
        raise UserError(f"cannot use the MLflow store {uri} ({first_line(e, 170)}); fix: check "
                        f"tracking.uri, or restore or rename tracking.experiment") from None


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
            exp_id = self.client.create_experiment(experiment, artifact_location=root.as_uri(), tags=EXPERIMENT_KIND)
        else:
            exp_id = exp.experiment_id
            if not EXPERIMENT_KIND.items() <= exp.tags.items():  # made by an older kdsearch, or by hand
                for k, v in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(exp_id, k, v)
        self.experiment, self.experiment_id = experiment, exp_id
        self.parent = None
        self.children = {}  # trial id -> run id
        self.logged = {}  # trial id -> the last epoch logged
        self.failures = {}  # trial id -> how many times it failed
        self.confirm_runs = {}  # (model, seed) -> run id
        self.registered = None  # the registered student: {"model", "version", "aliases"}

    def info(self):
        return {"tracking_uri": self.uri, "experiment": self.experiment, "parent_run_id": self.parent,
                "ui_command": ui_command(self.uri, self.experiment_id),
                **({"registered": self.registered} if self.registered else {})}

    def start_parent(self, run_name, search_id, files, params, baseline_rows):
        """The search's parent run, or the one an interrupted search of the same `search_id` started (set
        RUNNING again, with its confirmation runs, so that a resumed search adds to it and never starts a second).
        files: the study file and the users' network files, logged as artifacts. baseline_rows: the engine
        phase's Runs, logged as <model>_val_acc, <model>_test_acc."""
        found = self.client.search_runs([self.experiment_id], f"tags.`kdsearch.search_id` = '{search_id}'")
        if found:
            self.parent = found[0].info.run_id
            self.client.update_run(self.parent, status="RUNNING")
            for run in self._all(f"tags.`mlflow.parentRunId` = '{self.parent}' and tags.`kdsearch.stage` = 'confirm'"):
                self.confirm_runs[(run.data.tags["kdsearch.model"], int(run.data.params["seed"]))] = run.info.run_id
            return self.parent
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={"kdsearch.kind": "search", "kdsearch.search_id": search_id})
        self.parent = run.info.run_id
        for path in [files] if isinstance(files, (str, Path)) else files:
            self.client.log_artifact(self.parent, str(path))
        for k, v in params.items():
            self.client.log_param(self.parent, k, v)
        metrics = [Metric(metric_name(r.model, m), getattr(r, m), 0, 0) for r in baseline_rows for m in ACCURACIES]
        self.client.log_batch(self.parent, metrics=metrics)
        return self.parent

    def _all(self, filter_string):
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def start_trial(self, trial_id, name, params, arm="kd", student=None):
        """A trial's child run, tagged kdsearch.arm (kd, or ce: the control arm) and, with several students,
        kdsearch.student (its label); a trial restarted (a retry, a resume) goes on in the run it started. The run is found by its tag, not in memory: after a resume, Tune
        calls back a copy of this object."""
        if trial_id not in self.children:
            for run in self._all(f"tags.`mlflow.parentRunId` = '{self.parent}' and "
                                 f"tags.`kdsearch.trial_id` = '{trial_id}'"):
                self.children[trial_id] = run.info.run_id
                self.logged[trial_id] = max((m.step for m in self.client.get_metric_history(
                    run.info.run_id, "val_acc")), default=0)
        if trial_id in self.children:
            self.client.update_run(self.children[trial_id], status="RUNNING")
            return
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent, "kdsearch.trial_id": trial_id,
                                           "kdsearch.stage": "search", "kdsearch.arm": arm,
                                           **({"kdsearch.student": student} if student else {})})
        self.children[trial_id] = run.info.run_id
        tags = [RunTag("kdsearch.failures", str(self.failures[trial_id]))] if trial_id in self.failures else []
        self.client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()],
                              tags=tags)

    def log_epoch(self, trial_id, epoch, metrics):
        # one call per epoch: each sqlite write is its own transaction. NaN (a diverged trial) is not logged.
        # A trial restarted from an older checkpoint trains some epochs again (the same values: its state,
        # batch order included, comes back whole); each epoch is logged once, so the run's curves have one
        # point per step.
        if epoch <= self.logged.get(trial_id, 0):
            return
        self.logged[trial_id] = epoch
        ts = int(metrics.get("wall", 0) * 1000)
        self.client.log_batch(self.children[trial_id], metrics=[
            Metric(k, float(metrics[k]), ts, epoch) for k in curve_names(metrics) if math.isfinite(float(metrics[k]))])

    def count_failures(self, trial_id, failures):
        """The tag kdsearch.failures: how many times the trial has raised so far (each time retried from its last
        checkpoint, up to search.max_failures times; a lost Ray node counts)."""
        self.failures[trial_id] = failures  # a trial whose first start failed has no run yet: start_trial tags it
        if trial_id in self.children:
            self.client.set_tag(self.children[trial_id], "kdsearch.failures", str(failures))

    def end_trial(self, trial_id, state, error=None):
        """state: completed, pruned, diverged or failed (the tag kdsearch.state; the run status is FINISHED,
        KILLED or FAILED); error: a failed trial's first line of its error (the tag kdsearch.error)."""
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        self.client.set_tag(run_id, "kdsearch.state", state)
        if error:
            self.client.set_tag(run_id, "kdsearch.error", error[:500])
        self.client.set_terminated(run_id, {COMPLETED: "FINISHED", PRUNED: "KILLED"}.get(state, "FAILED"))

    def end_lost_and_running(self, trial_ids, status, arm=None, student=None):
        """After an arm's search (or on Ctrl-C, trial_ids and arm None: every arm's): a child run of the arm left
        RUNNING ends with `status`, or is deleted when its trial is not among `trial_ids` (a trial started after
        Tune's last snapshot before a kill: Tune does not know it on resume and Optuna's restored study does not
        either), so every trial has one. Another arm's runs are left alone: a resumed search reads its finished
        KD arm back while the CE arm's runs, killed mid-trial, still wait for their trials to go on."""
        mine = (f" and tags.`kdsearch.arm` = '{arm}'" if arm else "") + (
            f" and tags.`kdsearch.student` = '{student}'" if student else "")  # with several: this student's
        for run in self._all(f"tags.`mlflow.parentRunId` = '{self.parent}' and tags.`kdsearch.stage` = 'search' "
                             f"and attributes.status = 'RUNNING'{mine}"):
            if trial_ids is not None and run.data.tags["kdsearch.trial_id"] not in trial_ids:
                self.client.delete_run(run.info.run_id)
            else:
                self.client.set_terminated(run.info.run_id, status)

    def log_confirm_run(self, model, config, seed, history, test_acc, cached=False):
        """A confirmation run: a child run tagged kdsearch.stage=confirm, with its recipe, seed, per-epoch
        metrics and test accuracy. Logged once: a resumed search does not log it again."""
        if (model, seed) in self.confirm_runs:
            return
        run = self.client.create_run(self.experiment_id, run_name=f"confirm · {model} · seed {seed}",
                                     tags={"mlflow.parentRunId": self.parent, "kdsearch.stage": "confirm",
                                           "kdsearch.model": model, "kdsearch.cached": str(cached).lower()})
        self.confirm_runs[(model, seed)] = run.info.run_id
        params = [mlflow.entities.Param(k, str(v)) for k, v in {**config, "seed": seed}.items()]
        metrics = [Metric(k, float(h[k]), 0, h["epoch"]) for h in history for k in curve_names(history[-1])
                   if h.get(k) is not None]
        self.client.log_batch(run.info.run_id, params=params, metrics=metrics + [Metric("test_acc", test_acc, 0, 0)])
        self.client.set_terminated(run.info.run_id, "FINISHED")

    def log_best(self, report, model, input_example, registered=None, log=print, label=None):
        """The report's summary (parent_metrics: means over seeds at step 1, after the study seed's values at
        step 0), the best settings and the kd_best model, registered as a version of the model `registered` when
        given (register). model: the student as it is deployed (networks.LogitsOnly.portable: its logits alone,
        on the CPU), so that MLflow's layer needs no torch of its own. A registry that refuses is one line in
        `log`: the search and its report stand. label: with several students, the one whose kd_best this is:
        its metrics and params are named <label>/..., its model kd_best-<label>."""
        now, pre = int(time.time() * 1000), f"{label}/" if label else ""
        self.client.log_batch(self.parent, metrics=[Metric(pre + k, v, now, 1)
                                                    for k, v in parent_metrics(report).items()],
                              params=[mlflow.entities.Param(f"{pre}{prefix}_{k}", str(v)) for prefix, config in
                                      (("best", report["best_config"]), ("ce_best", report.get("ce_best_config")))
                                      for k, v in (config or {}).items()])
        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=self.parent), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.export's notes on a CPU-only model
            # an explicit requirement list skips MLflow's 4-5 s dependency inference
            info = mlflow.pytorch.log_model(model, name="kd_best" + (f"-{label}" if label else ""),
                                            input_example=input_example,
                                            pip_requirements=[f"torch=={version('torch').split('+')[0]}"])
        if registered:
            try:
                self.registered = register(self.client, self.parent, registered, info.model_uri, report)
            except Exception as e:  # a store without a registry, no permission: the search's work stands
                log(f"mlflow: kd_best was logged but not registered as {registered!r} ({first_line(e, 200)})")

    def log_report(self, paths):
        for f in paths:
            self.client.log_artifact(self.parent, str(f), artifact_path="report")

    def close_parent(self, status):
        """FINISHED, KILLED (interrupted) or FAILED; never left RUNNING."""
        if self.parent is not None:
            self.client.set_terminated(self.parent, status)


def parent_metrics(report):
    """The MLflow parent run's summary: each row's mean (and sd) accuracies over its seeds."""
    out = {}
    for r in report["rows"]:
        for m in ACCURACIES:  # <model>_<m> too: the search's start logged the study seed's value
            out[metric_name(r["model"], m)] = out[metric_name(r["model"], m, "_mean")] = r[m]
            if r[f"{m}_sd"] is not None:
                out[metric_name(r["model"], m, "_sd")] = r[f"{m}_sd"]
    for f in report.get("families") or ():  # the best single-seed trial of each loss family
        if f["best"] is not None:
            out[f"best_val_acc_{f['loss']}"] = f["best"]["val_acc"]
    for arm, figures in (report.get("importances") or {}).items():  # per arm: importance_kd_lr, importance_ce_lr
        out.update({f"importance_{arm}_{k}": v for k, v in figures.items()})
    for c in report.get("comparison") or ():  # kd_best_vs_ce_best_diff, ..._ci_low, ..._ci_high: the verdict
        stem = f"{c['a']}_vs_{c['b']}"
        out.update({f"{stem}_diff": c["diff"], f"{stem}_ci_low": c["ci95"][0], f"{stem}_ci_high": c["ci95"][1]})
    return out
