"""Hyperparameter importances over a search's completed trials, by Optuna's importance evaluator.

Optuna 5's default, PED-ANOVA (Watanabe et al., IJCAI 2023; conditional spaces: KDD 2026): a value is important
when its distribution among the best 10 % of the completed trials differs from its distribution over all of them
(a Pearson divergence of Parzen estimates). It handles a conditional space (beta, gamma present in some losses'
trials only) and is deterministic. The study is rebuilt from the trials (their values and final validation
accuracies), so the figures follow from report.json's trials alone; pruned, diverged and failed trials are left
out, since their accuracies are not final."""
import warnings

from .tuner import optuna_space

MIN_TRIALS = 3  # with fewer, the best 10 % is the whole top and the figures mean nothing


def importances(trials, space):
    """{name: importance}, largest first, over the completed trials; {} with fewer than MIN_TRIALS of them."""
    import optuna
    done = [t for t in trials if t["state"] == "completed"]
    if len(done) < MIN_TRIALS:
        return {}
    dists = optuna_space(space)
    study = optuna.create_study(direction="maximize")
    for t in done:
        study.add_trial(optuna.trial.create_trial(
            params=t["params"], distributions={k: dists[k] for k in t["params"]}, value=t["val_acc"]))
    with warnings.catch_warnings():  # its notes on few trials: the count is in the report
        warnings.simplefilter("ignore")
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
