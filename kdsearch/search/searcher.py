"""The Optuna searcher behind Ray Tune: the study's space as Optuna distributions (one mapping), given to Ray's
OptunaSearch as a define-by-run space (conditional when the loss is searched), and OptunaSearch told the truth
about stopped trials. Public OptunaSearch API only: no private attribute of Ray's is read or written."""
from kdsearch.core.names import METRIC, MODE
from kdsearch.core.records import COMPLETED, PRUNED, trial_state

NUMBER = "optuna_number"  # the key under which a trial's config carries its Optuna trial number


def optuna_space(space):
    """{name: optuna distribution} for the study's {name: Param}: the one mapping from the study file's types."""
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


def suggest(trial, name, d):
    """trial.suggest_* for distribution `d`: the public calls, which Ray's OptunaSearch records as the config
    (it sees only suggest_* calls) and which give Optuna the very distribution `d`."""
    import optuna.distributions as od
    if isinstance(d, od.CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, od.IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)


class PlainSpace:
    """Optuna's define-by-run form of a space without a searched loss: each distribution suggested in the
    space's order, which draws what OptunaSearch's dict-of-distributions form draws (the same sampler calls in
    the same order), plus the trial's Optuna number under NUMBER, a constant OptunaSearch puts in the config.
    A module-level class: Tune saves the searcher's state, this included, with plain pickle."""

    def __init__(self, space):
        self.dists = optuna_space(space)

    def __call__(self, trial):
        for name, d in self.dists.items():
            suggest(trial, name, d)
        return {NUMBER: trial.number}


class ConditionalSpace:
    """Optuna's define-by-run space for a searched loss: the loss first, then each value its loss takes
    (Param.losses), so that TPE sees a conditional space and no trial draws or shows a value its loss ignores;
    and the trial's Optuna number under NUMBER. A module-level class: Tune saves the searcher's state, this
    included, with plain pickle."""

    def __init__(self, space):
        self.losses = {name: p.losses for name, p in space.items()}
        self.dists = optuna_space(space)

    def __call__(self, trial):
        loss = trial.suggest_categorical("loss", self.dists["loss"].choices)
        for name, d in self.dists.items():
            if name == "loss" or (self.losses[name] is not None and loss not in self.losses[name]):
                continue
            suggest(trial, name, d)
        return {NUMBER: trial.number}


def make_searcher(space, seed, first=None):
    """Ray's OptunaSearch (TPE, seeded), told the truth about trials a scheduler stopped early or that diverged.

    Ray's OptunaSearch reports every trial with a result as COMPLETE, so a trial ASHA stopped after 2 of 30
    epochs would reach TPE as a finished trial with its 2-epoch score; this one tells Optuna PRUNED instead, and
    FAIL for a diverged or failed trial (trial_state, the one rule), by handing OptunaSearch no result: with none it
    tells PRUNED, or FAIL when error is set (a pruned trial keeps its last reported epoch's score as Optuna's
    value). Each trial's config carries its Optuna number under NUMBER (the space returns it), so the trial's
    results say which Optuna trial they are, across resumes too.
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class Searcher(OptunaSearch):
        def on_trial_complete(self, trial_id, result=None, error=False):
            # OptunaSearch's own rule (ray/tune/search/optuna/optuna_search.py, Ray 2.60, its
            # on_trial_complete): a result holding the metric is COMPLETE; no result is PRUNED, or FAIL with
            # error. tests/test_searcher.py checks that rule on Ray's class, so a release that changes it fails.
            state = trial_state(result, error)
            if state != COMPLETED:
                result, error = None, state != PRUNED  # diverged, failed: FAIL
            super().on_trial_complete(trial_id, result, error)

    space_arg = ConditionalSpace(space) if "loss" in space else PlainSpace(space)
    return Searcher(space=space_arg, metric=METRIC, mode=MODE, seed=seed,
                    points_to_evaluate=[first] if first else None)
