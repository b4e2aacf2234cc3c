"""The Tuner: the trial under Tune (checkpoints, resume), ASHA's rungs kept across resumes, the Tuner itself,
its run (Ctrl-C included) and its trials read back as records. Ray is imported inside functions only."""
import glob
import logging
import math
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kdsearch.core.errors import first_line
from kdsearch.core.names import METRIC, MODE
from kdsearch.core.records import Trial, curve_names, trial_state
from kdsearch.phase.trial import StoredTrial, TrialData, load_state, replay, run_trial, save_state
from kdsearch.search.searcher import NUMBER
from kdsearch.study.running import Resources
from kdsearch.study.schema import Recipe


@dataclass
class TuneJob:
    """What one arm's Tuner runs and where: the trials' data (into the object store once), the arm (kd, ce), its
    baseline's recipe as a dict (every trial's base) and stored run (what the trial at that recipe is), the
    resources of one trial (running.Resources, its GPU share resolved), the search's folder (Tune writes
    <folder>/ray for kd, <folder>/ray-ce for ce), the longest a trial can run (ASHA's last rung) and the
    student."""
    data: TrialData
    arm: str
    base: dict
    reuse: Optional[StoredTrial]
    resources: Resources
    folder: Path
    max_epochs: int
    student: Optional[str] = None  # with several students, the label of the one searched

    @property
    def path(self):
        """The arm's Tune folder: ray (the KD arm's, as before the control arm existed), ray-<arm>; with several
        students ray-<student>, ray-<student>-<arm>."""
        return self.folder / ("ray" + (f"-{self.student}" if self.student else "")
                              + ("" if self.arm == "kd" else f"-{self.arm}"))


def tune_trial(config, data, base, reuse=None):
    """run_trial under Tune: each epoch's metrics go to tune.report with a checkpoint of the whole training state
    (weights, optimizer, schedule, batch order, history), and a trial restarted after a failure or a resume goes
    on from its last checkpoint as if it had never stopped. A trial at the arm's baseline's own recipe is that
    baseline's stored run (`reuse`, a StoredTrial), replayed epoch by epoch."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_state(d)
    resumed_from = len(resume.history) if resume else 0  # every result says where this start went on from

    def report(metrics, state):
        with tempfile.TemporaryDirectory() as d:
            save_state(state(), d)
            tune.report({**metrics, "resumed_from": resumed_from}, checkpoint=tune.Checkpoint.from_directory(d))
    recipe = Recipe(**{**base, **{k: v for k, v in config.items() if k != NUMBER}})
    if reuse is not None and reuse.matches(recipe):
        replay(reuse, report, resume)
    else:
        run_trial(recipe, data, data.seed, report=report, resume=resume)


def keep_scheduler(scheduler):
    """A Tune callback that saves the scheduler's state (ASHA's rungs) with each of Tune's snapshots and puts it
    back when a search resumes: Tune saves the searcher's state but not the scheduler's, and ASHA would otherwise
    judge the resumed trials against empty rungs. It holds the very scheduler of the TuneConfig (both are
    pickled together in Tune's tuner.pkl, so they stay one object after a restore)."""
    from ray import tune

    class KeepScheduler(tune.Callback):
        def get_state(self):
            with tempfile.TemporaryDirectory() as d:
                scheduler.save(os.path.join(d, "scheduler.pkl"))
                with open(os.path.join(d, "scheduler.pkl"), "rb") as f:
                    return {"scheduler": f.read()}

        def set_state(self, state):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "scheduler.pkl"), "wb") as f:
                    f.write(state["scheduler"])
                scheduler.restore(os.path.join(d, "scheduler.pkl"))

    return KeepScheduler()


def _no_restore_hint(record):
    # Ray 2.60's hint, logged by the logger "ray.tune.tune" on a stop (ray/tune/tune.py: restore_entrypoint);
    # tests/test_searcher.py checks both, so a Ray that changes them fails there
    return "Tuner.restore(" not in record.getMessage()


def build_tuner(job, searcher, search, callbacks, resume=False):
    """The Tuner of `job` (TuneJob): at most search.max_concurrent trials at once, ASHA if asked for, a trial
    that raises retried from its checkpoint up to search.max_failures times.

    resume: go on with the search saved in <folder>/ray, if any. Tune restores its own record (finished trials
    stay finished, unfinished ones go on from their last checkpoint) and the searcher and callbacks saved with
    it: Optuna's study, its history and its sampler's random state; ASHA's rungs through keep_scheduler."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    # on Ctrl-C Tune would tell the user to call Tuner.restore(...); kdsearch's last line gives the command to run
    logging.getLogger("ray.tune.tune").addFilter(_no_restore_hint)

    trainable = tune.with_resources(tune.with_parameters(tune_trial, data=job.data, base=job.base, reuse=job.reuse),
                                     {"cpu": job.resources.cpu, "gpu": job.resources.gpu})
    path = str(job.path)
    # a kill between the Tuner's creation and Tune's first snapshot leaves tuner.pkl but no state to restore;
    # Ray 2.60 names that snapshot experiment_state-<time>.json (tests/test_searcher.py checks it)
    if resume and tune.Tuner.can_restore(path) and glob.glob(os.path.join(path, "experiment_state-*.json")):
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False)
    shutil.rmtree(path, ignore_errors=True)
    scheduler = None
    if search.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=job.max_epochs,
                                  grace_period=min(search.grace_period, job.max_epochs),
                                  reduction_factor=search.reduction_factor)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, search.max_concurrent),
                                    scheduler=scheduler, num_samples=search.num_samples),
        run_config=tune.RunConfig(name=job.path.name, storage_path=str(job.folder), verbose=0,
                                  callbacks=callbacks + ([keep_scheduler(scheduler)] if scheduler else []),
                                  failure_config=tune.FailureConfig(max_failures=search.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def fit(tuner):
    """tuner.fit() (its result grid), where Ctrl-C raises KeyboardInterrupt after Tune's own graceful stop
    (trials stopped, a last snapshot written to resume from); Tune's fit() would return as if the search were
    done."""
    before = signal.getsignal(signal.SIGINT)
    results = tuner.fit()
    # Ray 2.60's tune.run puts the old handler back on a stop signal and leaves its own installed otherwise
    # (ray/tune/tune.py, signal_interrupt_tune_run); tests/test_searcher.py checks the second half
    interrupted = signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, before)
    if interrupted:
        raise KeyboardInterrupt
    return results


def collect_trials(results, names, arm="kd"):
    """One Trial of the arm `arm` per trial of the result grid, numbered in Optuna's order, with its state
    (trial_state: completed, pruned, diverged or failed, with its error's line), its per-epoch history and its
    last checkpoint's folder (a student the confirmation reads)."""
    trials = []
    for r in results:
        df, m, config = r.metrics_dataframe, r.metrics or {}, r.config or {}  # None: a trial Tune lost track of
        cols = [] if df is None else ["epoch", *curve_names(df.columns)]
        rows = [] if df is None else [{c: _number(row[c], int if c == "epoch" else float) for c in cols}
                                      for _, row in df.iterrows()]
        # a trial restored from an older checkpoint reports some epochs again; Tune keeps both rows: the last wins
        history = sorted({h["epoch"]: h for h in rows}.values(), key=lambda h: h["epoch"])
        trials.append(Trial(
            number=config.get(NUMBER, len(trials)), trial_id=m.get("trial_id"),
            state=trial_state(m, r.error is not None), error=first_line(str(r.error), 300) if r.error else None,
            params={k: config[k] for k in names if k in config},
            val_acc=history[-1]["val_acc"] if history else None, epochs_run=len(history),
            train_s=m.get("time_s", 0.0), train_start=m.get("train_start"), train_end=m.get("wall"),
            history=history, restarts=_restarts(df), checkpoint=r.checkpoint.path if r.checkpoint else None,
            arm=arm, reused=m.get("reused")))
    return sorted(trials, key=lambda t: t.number)


def _restarts(df):
    """The epoch each restart of a trial (a retry after a failure, a resume after a kill) went on from, in order,
    read from its results: a restart's results carry a new `resumed_from`, or go back to an epoch reported
    before."""
    if df is None or "resumed_from" not in df.columns:
        return []
    restarts, last, last_epoch = [], 0, 0
    for epoch, start in zip(df["epoch"], df["resumed_from"]):
        if int(start) != last or int(epoch) <= last_epoch:
            restarts.append(int(start))
        last, last_epoch = int(start), int(epoch)
    return restarts


def _number(value, kind):
    """A metric for report.json, which is plain JSON: a diverged trial's NaN loss becomes null."""
    value = kind(value)
    return value if math.isfinite(value) else None
