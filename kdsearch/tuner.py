"""Ray and the Tuner: a local Ray on loopback (or a joined cluster), the Optuna searcher, the Tuner.

Ray is imported inside functions only: start_ray sets the environment that Ray reads when it is imported."""
import os
import tempfile

from .errors import UserError
from .trial import kd_trial, stopped_early


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
            step = p.step or 1
            clipped = min(int(p.low + round((clipped - p.low) / step) * step), int(p.high))
        if clipped != value:
            log(f"search: kd_reference's {name} = {value} lies outside the space; the first trial uses {clipped}")
        point[name] = clipped
    return point


def make_searcher(space, seed, first=None):
    """Ray's OptunaSearch (TPE, seeded), told the truth about trials a scheduler stopped early.

    Ray's OptunaSearch reports every trial with a result as COMPLETE, so a trial ASHA stopped after 2 of 30
    epochs would reach TPE as a finished trial with its 2-epoch score; this one tells Optuna PRUNED instead.
    It is the only code that touches OptunaSearch's private state, and keeps what others need in public:
    `trials` = {trial id: (Optuna trial number, state)}, state one of running, completed, pruned, failed.
    Tune tells the searcher that a trial ended before it tells the callbacks, so they can read it.
    """
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch
    names = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned"}

    class Searcher(OptunaSearch):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.trials = {}

        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            if trial_id in self._ot_trials:
                self.trials[trial_id] = (self._ot_trials[trial_id].number, "running")
            return config

        def on_trial_complete(self, trial_id, result=None, error=False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return super().on_trial_complete(trial_id, result, error)
            ot_trial = self._ot_trials[trial_id]
            if not error and stopped_early(result):
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)
            else:
                super().on_trial_complete(trial_id, result, error)
            state = next(t.state for t in self._ot_study.get_trials(deepcopy=False) if t.number == ot_trial.number)
            self.trials[trial_id] = (ot_trial.number, names.get(state, "failed"))

    return Searcher(space=optuna_space(space), metric="val_acc", mode="max", seed=seed,
                    points_to_evaluate=[first] if first else None)


def tune_trial(config, **kwargs):
    """kd_trial under Tune: each epoch's metrics go to tune.report with a checkpoint of the student."""
    import torch
    from ray import tune

    def report(metrics, model):
        with tempfile.TemporaryDirectory() as d:
            torch.save(model.state_dict(), os.path.join(d, "student.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    kd_trial(config, **kwargs, report=report)


def build_tuner(trial_args, resources, searcher, search, max_epochs, folder, callbacks):
    """The Tuner: `trial_args` (numpy arrays go into the object store once, read zero-copy by every trial),
    `resources` {"cpu", "gpu"} per trial, at most search.max_concurrent at once, and ASHA if asked for."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    scheduler = None
    if search.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_epochs,
                                  grace_period=min(search.grace_period, max_epochs),
                                  reduction_factor=search.reduction_factor)
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(tune_trial, **trial_args), resources),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, search.max_concurrent),
                                    scheduler=scheduler, num_samples=search.num_samples),
        run_config=tune.RunConfig(name="ray", storage_path=str(folder), verbose=0, callbacks=callbacks,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
