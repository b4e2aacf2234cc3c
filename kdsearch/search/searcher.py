"""The Optuna searcher behind Ray Tune: the study's space as Optuna distributions (one mapping), a
define-by-run space when the loss is searched, and Ray's OptunaSearch told the truth about stopped trials."""
from kdsearch.core.records import trial_state
from kdsearch.search import optuna_shim

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


class ConditionalSpace:
    """Optuna's define-by-run space for a searched loss: the loss first, then each value its loss takes
    (Param.losses), so that TPE sees a conditional space and no trial draws or shows a value its loss ignores.
    A module-level class: Tune saves the searcher's state, this included, with plain pickle."""

    def __init__(self, space):
        self.losses = {name: p.losses for name, p in space.items()}
        self.dists = optuna_space(space)

    def __call__(self, trial):
        import optuna.distributions as od
        loss = trial.suggest_categorical("loss", self.dists["loss"].choices)
        for name, d in self.dists.items():
            if name == "loss" or (self.losses[name] is not None and loss not in self.losses[name]):
                continue
            if isinstance(d, od.CategoricalDistribution):
                trial.suggest_categorical(name, d.choices)
            elif isinstance(d, od.IntDistribution):
                trial.suggest_int(name, d.low, d.high, step=d.step)
            else:
                trial.suggest_float(name, d.low, d.high, log=d.log)


def make_searcher(space, seed, first=None):
    """Ray's OptunaSearch (TPE, seeded), told the truth about trials a scheduler stopped early or that diverged.

    Ray's OptunaSearch reports every trial with a result as COMPLETE, so a trial ASHA stopped after 2 of 30
    epochs would reach TPE as a finished trial with its 2-epoch score; this one tells Optuna PRUNED instead, and
    FAIL for a diverged trial (trial_state, the one rule). Each trial's config carries its Optuna number under
    NUMBER, so the trial's results say which Optuna trial they are, across resumes too.
    """
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_state = {"pruned": TrialState.PRUNED, "diverged": TrialState.FAIL}  # else: OptunaSearch's COMPLETE

    class Searcher(OptunaSearch):
        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            number = optuna_shim.optuna_number(self, trial_id)
            return {**config, NUMBER: number} if isinstance(config, dict) and number is not None else config

        def on_trial_complete(self, trial_id, result=None, error=False):
            state = trial_state(result, error)
            if not (state in optuna_state and optuna_shim.tell_once(self, trial_id, optuna_state[state])):
                super().on_trial_complete(trial_id, result, error)

    space_arg = ConditionalSpace(space) if "loss" in space else optuna_space(space)
    return Searcher(space=space_arg, metric="val_acc", mode="max", seed=seed,
                    points_to_evaluate=[first] if first else None)
