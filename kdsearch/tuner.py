"""Ray and the Tuner: a local Ray on loopback (or a joined cluster), the Optuna searcher, the Tuner.

Ray is imported inside functions only: start_ray sets the environment that Ray reads when it is imported."""
import glob
import logging
import os
import shutil
import tempfile

from .errors import UserError
from .trial import kd_trial, trial_state


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
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if address is not None:
        # if the cluster stops answering between check_address and here: one try of seconds, not 14 minutes
        os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", "2")  # read when ray is imported
        os.environ.setdefault("RAY_py_gcs_connect_timeout_s", "5")
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")  # the tries (read by ray.init)
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


def check_address(address, timeout=3.0):
    """A Ray cluster must answer at `address` (host:port), checked before anything is written: ray.init would
    retry for 14 minutes. Ray's GCS speaks gRPC, so it answers HTTP/2's connection preface with a SETTINGS
    frame; a closed port refuses, and another server answers something else (or nothing)."""
    import socket
    host, _, port = address.rpartition(":")
    fix = "fix: give the head node's address as HOST:PORT (ray status on the head node prints it)"
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: not HOST:PORT; {fix}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            frame = conn.recv(9)
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({type(e).__name__}: {e}); "
                        f"{fix}") from None
    if len(frame) < 9 or frame[3] != 4:
        raise UserError(f"--address {address}: something listens there, but not a Ray cluster; {fix}")


def stop_ray():
    import ray
    ray.shutdown()


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


class ConditionalSpace:
    """Optuna's define-by-run space for a searched loss: the loss first, then each value its loss takes
    (Param.losses), so that TPE sees a conditional space and no trial draws or shows a value its loss ignores.
    A module-level class: Tune saves the searcher's state, this included, with plain pickle."""

    def __init__(self, space):
        self.space = space

    def __call__(self, trial):
        loss = trial.suggest_categorical("loss", self.space["loss"].values)
        for name, p in self.space.items():
            if name == "loss" or (p.losses is not None and loss not in p.losses):
                continue
            if p.type == "choice":
                trial.suggest_categorical(name, p.values)
            elif p.type == "int":
                trial.suggest_int(name, int(p.low), int(p.high), step=p.step or 1)
            else:
                trial.suggest_float(name, p.low, p.high, log=p.type == "loguniform")


def first_point(space, kd_reference, log):
    """kd_reference's settings (by default the notebook's T 4.5, alpha 0.8, lr 1e-3), moved to the nearest
    point of the space, so that the first trial is the reference."""
    point = {}
    for name in sorted(space, key=lambda n: n != "loss"):  # the loss first: the other values depend on it
        p, value = space[name], getattr(kd_reference, name)
        if value is None or (p.losses is not None and point.get("loss", kd_reference.loss) not in p.losses):
            continue  # not a value of the first trial's loss (or kd_reference has none: Optuna draws it)
        if p.type == "choice" and value not in p.values and isinstance(value, str):
            clipped = p.values[0]
        elif p.type == "choice":
            clipped = value if value in p.values else min(p.values, key=lambda v: abs(v - value))
        else:
            clipped = min(max(value, p.low), p.high)
        if p.type == "int":
            step = p.step or 1
            clipped = min(int(p.low + round((clipped - p.low) / step) * step), int(p.high))
        if clipped != value:
            log(f"search: kd_reference's {name} = {value} lies outside the space; the first trial uses {clipped}")
        point[name] = clipped
    return point


NUMBER = "optuna_number"  # the key under which a trial's config carries its Optuna trial number


def make_searcher(space, seed, first=None):
    """Ray's OptunaSearch (TPE, seeded), told the truth about trials a scheduler stopped early or that diverged.

    Ray's OptunaSearch reports every trial with a result as COMPLETE, so a trial ASHA stopped after 2 of 30
    epochs would reach TPE as a finished trial with its 2-epoch score; this one tells Optuna PRUNED instead, and
    FAIL for a diverged trial (trial_state, the one rule). Each trial's config carries its Optuna number under
    NUMBER, so the trial's results say which Optuna trial they are, across resumes too.
    """
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch
    told = {"pruned": TrialState.PRUNED, "diverged": TrialState.FAIL}

    class Searcher(OptunaSearch):
        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            if isinstance(config, dict) and trial_id in self._ot_trials:
                config = {**config, NUMBER: self._ot_trials[trial_id].number}
            return config

        def on_trial_complete(self, trial_id, result=None, error=False):
            state = trial_state(result, error)
            if state in told and trial_id in self._ot_trials and trial_id not in self._completed_trials:
                self._ot_study.tell(self._ot_trials[trial_id], state=told[state])
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    conditional = "loss" in space
    return Searcher(space=ConditionalSpace(space) if conditional else optuna_space(space), metric="val_acc",
                    mode="max", seed=seed,
                    points_to_evaluate=[first] if first else None)


def tune_trial(config, **kwargs):
    """kd_trial under Tune: each epoch's metrics go to tune.report with a checkpoint of the whole training state
    (weights, optimizer, schedule, batch order, history), and a trial restarted after a failure or a resume goes
    on from its last checkpoint as if it had never stopped."""
    import torch
    from ray import tune

    def report(metrics, state):
        with tempfile.TemporaryDirectory() as d:
            torch.save(state(), os.path.join(d, CHECKPOINT))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    config = {k: v for k, v in config.items() if k != NUMBER}
    kd_trial(config, **kwargs, report=report, resume=load_checkpoint(tune.get_checkpoint()))


CHECKPOINT = "trial.pt"


def load_checkpoint(checkpoint, device="cpu"):
    """A trial's training state from its Tune checkpoint, or None."""
    if checkpoint is None:
        return None
    import torch
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, CHECKPOINT), map_location=device, weights_only=True)


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
    return "Tuner.restore(" not in record.getMessage()


def build_tuner(trial_args, resources, searcher, search, max_epochs, folder, callbacks, resume=False):
    """The Tuner: `trial_args` (numpy arrays go into the object store once, read zero-copy by every trial),
    `resources` {"cpu", "gpu"} per trial, at most search.max_concurrent at once, ASHA if asked for, a trial that
    raises retried from its checkpoint up to search.max_failures times.

    resume: go on with the search saved in <folder>/ray, if any. Tune restores its own record (finished trials
    stay finished, unfinished ones go on from their last checkpoint) and the searcher and callbacks saved with
    it: Optuna's study, its history and its sampler's random state; ASHA's rungs through keep_scheduler."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    # on Ctrl-C Tune would tell the user to call Tuner.restore(...); kdsearch's last line gives the command to run
    logging.getLogger("ray.tune.tune").addFilter(_no_restore_hint)

    trainable = tune.with_resources(tune.with_parameters(tune_trial, **trial_args), resources)
    path = os.path.join(folder, "ray")
    # a kill between the Tuner's creation and Tune's first snapshot leaves tuner.pkl but no state to restore
    if resume and tune.Tuner.can_restore(path) and glob.glob(os.path.join(path, "experiment_state-*.json")):
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False)
    shutil.rmtree(path, ignore_errors=True)
    scheduler = None
    if search.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_epochs,
                                  grace_period=min(search.grace_period, max_epochs),
                                  reduction_factor=search.reduction_factor)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, search.max_concurrent),
                                    scheduler=scheduler, num_samples=search.num_samples),
        run_config=tune.RunConfig(name="ray", storage_path=str(folder), verbose=0,
                                  callbacks=callbacks + ([keep_scheduler(scheduler)] if scheduler else []),
                                  failure_config=tune.FailureConfig(max_failures=search.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
