"""Hyperparameter importances over a search's completed trials, by Optuna's importance evaluator.

Optuna 5's default, PED-ANOVA (Watanabe et al., IJCAI 2023; conditional spaces: KDD 2026): a value is important
when its distribution among the best 10 % of the completed trials differs from its distribution over all of them
(a Pearson divergence of Parzen estimates). It handles a conditional space (beta, gamma present in some losses'
trials only) and is deterministic. The study is rebuilt from the trials (their values and final validation
accuracies), so the figures follow from report.json's trials alone; pruned, diverged and failed trials are left
out, since their accuracies are not final."""
import warnings

from kdsearch.core.records import COMPLETED
from kdsearch.search.searcher import optuna_space

MIN_TRIALS = 3  # PED-ANOVA compares the best 10 % (one trial when there are 10 or fewer) with all of them


def importances(trials, space, log=print):
    """{name: importance}, largest first, summing to 1, over the completed trials: a value no completed trial has
    is absent, one present in a single completed trial gets 0. {} when there are fewer than MIN_TRIALS of them or
    the evaluator finds no difference at all (equal accuracies): Optuna would then give every value an equal
    share, a figure that means nothing. Never raises: the report matters more than this figure."""
    import optuna
    done = [t for t in trials if t["state"] == COMPLETED and t["val_acc"] is not None]
    if len(done) < MIN_TRIALS:
        return {}
    try:
        dists = optuna_space(space)
        study = optuna.create_study(direction="maximize")
        for t in done:
            study.add_trial(optuna.trial.create_trial(
                params=t["params"], distributions={k: dists[k] for k in t["params"]}, value=t["val_acc"]))
        with warnings.catch_warnings():  # its notes on few trials: the count is in the report
            warnings.simplefilter("ignore")
            raw = optuna.importance.get_param_importances(study, normalize=False)
    except Exception as e:  # e.g. a value outside its distribution: no figure, and the report still comes
        log(f"importances: not computed ({type(e).__name__}: {str(e)[:150]})")
        return {}
    total = sum(raw.values())
    return {k: float(v) / total for k, v in raw.items()} if total > 0 else {}
