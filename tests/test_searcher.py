"""The searcher (OptunaSearch's public API only) under real Ray Tune: each trial's config carries its Optuna
number, stopped trials reach Optuna as PRUNED and diverged or failed ones as FAIL, the first trial is
kd_reference's point; and the Ray behaviour it rests on, checked on Ray's own OptunaSearch, so that a Ray
release that changes it fails here. One local Ray (1 CPU, no dashboard) for the module."""
import os
import pickle
import sys
from pathlib import Path


import optuna  # noqa: E402
import pytest  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from kdsearch.core.records import trial_state  # noqa: E402
from kdsearch.search.searcher import NUMBER, ConditionalSpace, PlainSpace, make_searcher, optuna_space  # noqa: E402
from kdsearch.study.schema import Param  # noqa: E402

SPACE = {"alpha": Param("uniform", 0.0, 1.0), "lr": Param("loguniform", 1e-4, 1e-2),
         "epochs": Param("int", 2, 4)}  # no searched loss: the space that was a dict of distributions
FIRST = {"alpha": 0.8, "lr": 1e-3, "epochs": 4}
N, DIVERGES = 8, 3  # the trial with Optuna number 3 diverges at its 1st epoch (before ASHA can stop it)


@pytest.fixture
def studies(monkeypatch):
    """Every Optuna study OptunaSearch creates, through optuna's public create_study: the test reads what
    Optuna was told without touching the searcher's private attributes."""
    made, create = [], optuna.study.create_study

    def recording(*args, **kwargs):
        made.append(create(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(optuna.study, "create_study", recording)
    return made


@pytest.fixture(scope="module")
def ray_local():
    """kdsearch's own local Ray (on loopback, no token file)."""
    from ray import cloudpickle

    from kdsearch.search.cluster import start_ray, stop_ray
    start_ray(None, lambda m: None)
    # Ray's workers cannot import this test module (pytest's sys.path): its trainable travels by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    stop_ray()


def score(config, epoch):
    """The best trial is the one nearest alpha 0.8 (FIRST's): ASHA stops later trials that score below it."""
    return 100.0 * epoch / 4 - 50.0 * abs(config["alpha"] - 0.8)


def trainable(config):
    from ray import tune
    for epoch in range(1, config["epochs"] + 1):
        diverged = config[NUMBER] == DIVERGES
        tune.report({"epoch": epoch, "epochs": config["epochs"], "val_acc": score(config, epoch),
                     **({"diverged": True} if diverged else {})})
        if diverged:
            return


def test_under_tune_numbers_states_and_the_first_point(ray_local, studies, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    searcher = make_searcher(SPACE, seed=0, first=FIRST)
    (study,) = studies
    asha = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=4, grace_period=1,
                         reduction_factor=2)
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, 1), scheduler=asha, num_samples=N, reuse_actors=True),
        run_config=tune.RunConfig(name="t", storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert not results.errors
    rows = sorted(((r.config, r.metrics) for r in results), key=lambda cm: cm[0][NUMBER])

    # every trial's config carries its Optuna number, 0..n-1
    assert [c[NUMBER] for c, _ in rows] == list(range(N))
    # the first trial is points_to_evaluate's point (the number aside)
    assert {k: v for k, v in rows[0][0].items() if k != NUMBER} == FIRST
    # and each trial's config is Optuna's params for that number, plus the number alone
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [{**t.params, NUMBER: t.number} for t in trials] == [c for c, _ in rows]

    # Optuna's state of each trial is trial_state's reading of its last result, and all three occur
    want = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "diverged": TrialState.FAIL}
    states = [t.state for t in trials]
    assert states == [want[trial_state(m)] for _, m in rows]
    assert states[DIVERGES] == TrialState.FAIL and states[0] == TrialState.COMPLETE
    assert TrialState.PRUNED in states, states  # ASHA stopped at least one trial early
    pruned = [(t, m) for t, (_, m) in zip(trials, rows) if t.state == TrialState.PRUNED]
    assert all(m["epoch"] < m["epochs"] for _, m in pruned)
    # Tune never gives the stopping result to the searcher's on_trial_result (tune_controller.py: only a
    # trial not to be stopped), so Optuna's intermediate values end one epoch before it, and a PRUNED trial's
    # value is the last of them (Optuna's rule), None for a trial stopped at its first epoch
    for t, m in pruned:
        assert sorted(t.intermediate_values) == list(range(1, m["epoch"]))
        assert t.value == (t.intermediate_values[m["epoch"] - 1] if m["epoch"] > 1 else None)

    # Tune saved the searcher's state with plain pickle; a fresh searcher restored from it (a resume)
    # numbers its next trial N
    (saved,) = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs if f.startswith("searcher-state")]
    again = make_searcher(SPACE, seed=0, first=FIRST)
    again.restore(saved)
    assert again.suggest("after-resume")[NUMBER] == N


# The Ray behaviour the proposal rests on, checked on Ray's own OptunaSearch: when one of these fails, Ray
# changed, and kdsearch/search/searcher.py must be re-read against ray/tune/search/optuna/optuna_search.py.

def test_ray_optunasearch_contract(studies, tmp_path):
    from ray.tune.search.optuna import OptunaSearch
    point = {"alpha": 0.8, "lr": 1e-3}  # fewer keys than the space: allowed for a define-by-run space
    s = OptunaSearch(space=PlainSpace(SPACE), metric="val_acc", mode="max", seed=0, points_to_evaluate=[point])
    (study,) = studies
    configs = [s.suggest(t) for t in ("done", "stopped", "diverged", "empty")]
    # a define-by-run space's returned constants join the suggested values in the config
    assert [c[NUMBER] for c in configs] == [0, 1, 2, 3]
    assert set(configs[1]) == {"alpha", "lr", "epochs", NUMBER}
    # points_to_evaluate with a define-by-run space: the first trial takes the point, draws the rest
    assert {k: configs[0][k] for k in point} == point and 2 <= configs[0]["epochs"] <= 4

    s.on_trial_result("stopped", {"val_acc": 30.0, "training_iteration": 1})
    s.on_trial_complete("done", {"val_acc": 40.0})  # a result with the metric: COMPLETE, whatever else
    s.on_trial_complete("stopped", None, error=False)  # no result, no error: PRUNED
    s.on_trial_complete("diverged", None, error=True)  # no result, an error: FAIL
    s.on_trial_complete("empty", {"val_acc": 1.0, "epoch": 1, "epochs": 4})  # the ASHA case: COMPLETE
    by_number = {t.number: t for t in study.get_trials()}
    assert [by_number[i].state for i in range(4)] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                                      TrialState.COMPLETE]
    assert by_number[1].value == 30.0  # PRUNED keeps the last intermediate value
    # plain pickle of the searcher's state (Tune's save) and a restore that goes on numbering
    s.save(str(tmp_path / "state.pkl"))
    with open(tmp_path / "state.pkl", "rb") as f:
        assert isinstance(pickle.load(f), dict)
    t = OptunaSearch(space=PlainSpace(SPACE), metric="val_acc", mode="max", seed=0)
    t.restore(str(tmp_path / "state.pkl"))
    assert t.suggest("next")[NUMBER] == 4


def test_the_searcher_reads_each_result_by_trial_state(studies):
    """The unit view (no Ray run): stopped -> PRUNED, finished -> COMPLETE, diverged and crashed -> FAIL; a
    completion told twice is ignored by OptunaSearch (it warns)."""
    s = make_searcher({"lr": Param("loguniform", 1e-4, 1e-2), "epochs": Param("int", 1, 5)}, seed=0)
    (study,) = studies
    configs = {tid: s.suggest(tid) for tid in ("stopped", "finished", "diverged", "crashed")}
    assert [c[NUMBER] for c in configs.values()] == [0, 1, 2, 3]
    s.on_trial_result("stopped", {"val_acc": 30.0, "training_iteration": 1, "epoch": 1, "epochs": 4})
    s.on_trial_complete("stopped", {"val_acc": 30.0, "training_iteration": 1, "epoch": 1, "epochs": 4})
    s.on_trial_complete("finished", {"val_acc": 40.0, "training_iteration": 4, "epoch": 4, "epochs": 4})
    s.on_trial_complete("diverged", {"val_acc": float("nan"), "epoch": 2, "epochs": 4, "diverged": True})
    s.on_trial_complete("crashed", None, error=True)
    s.on_trial_complete("stopped", None, error=True)  # again: ignored
    # the 1-epoch score never reached TPE as a result, nor did the diverged trial's
    assert [t.state for t in study.get_trials()] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL,
                                                     TrialState.FAIL]
    assert [trial_state(r, e) for r, e in [({"epoch": 1, "epochs": 4}, False), ({"epoch": 4, "epochs": 4}, False),
                                           ({"epoch": 2, "epochs": 4, "diverged": True}, False), (None, True)]] \
        == ["pruned", "completed", "diverged", "failed"]


def test_a_searched_loss_is_conditional_and_both_spaces_pickle():
    space = {"loss": Param("choice", values=["kd", "dkd", "dist"]), "temperature": Param("loguniform", 1, 8),
             "beta": Param("loguniform", 0.5, 8, losses=["dkd", "dist"]),
             "gamma": Param("uniform", 0, 2, losses=["dist"])}
    first = {"loss": "kd", "temperature": 4.5}
    s = make_searcher(space, seed=0, first=first)
    configs = [s.suggest(f"t{i}") for i in range(12)]
    assert {k: v for k, v in configs[0].items() if k != NUMBER} == first
    assert [c[NUMBER] for c in configs] == list(range(12))
    takes = {"kd": set(), "dkd": {"beta"}, "dist": {"beta", "gamma"}}
    assert all(set(c) - {NUMBER, "loss", "temperature"} == takes[c["loss"]] for c in configs)
    for sp in (ConditionalSpace(space), PlainSpace(SPACE)):  # module-level classes: plain pickle round-trips
        back = pickle.loads(pickle.dumps(sp))
        assert type(back) is type(sp) and back.dists == sp.dists == {k: v for k, v in optuna_space(
            space if isinstance(sp, ConditionalSpace) else SPACE).items()}


# The other Ray internals kdsearch reads (each commented where it is read, with the Ray version): a Ray release
# that changes one fails here.

def raises_on_its_first_epoch(config):
    if config["x"] == 1:
        raise ValueError("boom at epoch 1")
    from ray import tune
    tune.report({"epoch": 1, "epochs": 1, "val_acc": 1.0})


def test_the_ray_internals_kdsearch_reads(ray_local, tmp_path):
    import glob
    import logging
    import signal

    import ray.tune.tune
    from ray import tune

    from kdsearch.search.tune_callback import error_line
    error_files = []

    class Errors(tune.Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            error_files.append(trial.error_file)

    before = signal.getsignal(signal.SIGINT)
    tuner = tune.Tuner(raises_on_its_first_epoch, param_space={"x": tune.grid_search([0, 1])},
                       run_config=tune.RunConfig(name="t", storage_path=str(tmp_path), verbose=0,
                                                 callbacks=[Errors()]))
    try:
        tuner.fit()
        # tuner.fit: without a stop signal, Tune leaves its own SIGINT handler installed
        assert signal.getsignal(signal.SIGINT) is not before
    finally:
        signal.signal(signal.SIGINT, before)
    # tuner.build_tuner: Tune's snapshot, the mark that a search can be restored
    assert glob.glob(str(tmp_path / "t" / "experiment_state-*.json"))
    # tune_callback.error_line: the error file's layout
    (path,) = error_files
    assert error_line(path) == "ValueError: boom at epoch 1"
    # tuner._no_restore_hint: the hint's text and its logger
    assert ray.tune.tune.logger is logging.getLogger("ray.tune.tune")
    assert 'Tuner.restore(path="{path}"' in Path(ray.tune.tune.__file__).read_text()
