"""The report's breakdown by loss family and the hyperparameter importances, on made-up trials (real Optuna)."""
import random

from kdsearch.report.build import families
from kdsearch.search.importance import importances
from kdsearch.study.schema import Param
from kdsearch.tracking.tracker import parent_metrics

SPACE = {"loss": Param("choice", values=["kd", "dist", "dkd"]), "alpha": Param("uniform", 0, 1),
         "temperature": Param("loguniform", 1, 20), "gamma": Param("uniform", 0.5, 2, losses=["dist"])}


def made_up_trials(n, seed=0):
    """Trials whose accuracy follows alpha alone (plus a little noise); dkd is never drawn."""
    rng, out = random.Random(seed), []
    for i in range(n):
        p = {"loss": rng.choice(["kd", "dist"]), "alpha": rng.random(), "temperature": rng.uniform(1, 20)}
        if p["loss"] == "dist":
            p["gamma"] = rng.uniform(0.5, 2)
        out.append({"number": i, "state": "completed", "params": p, "val_acc": 50 + 30 * p["alpha"] + rng.random()})
    return out


def test_the_value_that_drives_accuracy_is_the_most_important_and_conditional_values_count():
    imp = importances(made_up_trials(40), SPACE)
    assert set(imp) == {"loss", "alpha", "temperature", "gamma"}  # gamma: in dist's trials only
    assert list(imp)[0] == "alpha" and imp["alpha"] > 0.5
    assert abs(sum(imp.values()) - 1) < 1e-9


def test_importances_use_completed_trials_only_and_need_three():
    trials = made_up_trials(40)
    for t in trials[:20]:  # a stopped trial's accuracy is not final: left out, whatever it is
        t["state"], t["val_acc"] = "pruned", 100.0 - t["val_acc"]
    assert importances(trials, SPACE) == importances(trials[20:], SPACE)
    assert importances(made_up_trials(2), SPACE) == {}


def test_each_family_has_its_best_completed_trial_and_its_mean_over_seeds():
    trials = made_up_trials(10)
    best_kd = max((t for t in trials if t["params"]["loss"] == "kd"), key=lambda t: t["val_acc"])
    best_kd["state"] = "pruned"  # never a family's best
    confirmed = [{"trial": t["number"], "seeds": [0, 1], "val_accs": [t["val_acc"], 40.0]} for t in trials]
    fams = {f["loss"]: f for f in families(trials, SPACE, confirmed)}
    assert list(fams) == ["kd", "dist", "dkd"]
    for loss in ("kd", "dist"):
        done = [t for t in trials if t["params"]["loss"] == loss and t["state"] == "completed"]
        top = max(done, key=lambda t: t["val_acc"])
        assert fams[loss]["completed"] == len(done) and fams[loss]["best"]["trial"] == top["number"]
        assert fams[loss]["best"]["confirmed_val_acc"] == (top["val_acc"] + 40) / 2
    assert fams["dkd"] == {"loss": "dkd", "trials": 0, "completed": 0, "best": None}
    assert families(trials, {k: v for k, v in SPACE.items() if k != "loss"}, confirmed) == []
    metrics = parent_metrics({"rows": [], "families": list(fams.values()), "importances": {"kd": {"alpha": 0.9}}})
    assert metrics == {"best_val_acc_kd": fams["kd"]["best"]["val_acc"],
                       "best_val_acc_dist": fams["dist"]["best"]["val_acc"], "importance_kd_alpha": 0.9}


def test_no_figures_when_nothing_separates_the_trials_or_a_value_is_out_of_its_space():
    trials = made_up_trials(12)
    for t in trials:
        t["val_acc"] = 50.0  # Optuna would hand every value an equal share: a figure that means nothing
    assert importances(trials, SPACE) == {}
    said = []
    trials = made_up_trials(12)
    trials[3]["params"]["loss"] = "kd_ls"  # not in the space's choices: logged, and the report still comes
    assert importances(trials, SPACE, said.append) == {} and said[0].startswith("importances: not computed (")
