"""Trials a scheduler stops early must reach Optuna as PRUNED, not COMPLETE with a partial score."""
import csv
import json
import subprocess
import sys

from conftest import TINY_BASE, pixels, plot

from kdsearch.search.searcher import NUMBER, make_searcher

ASHA = """\
space:
  loss: {type: choice, values: [kd, dist]}   # and the report's breakdown by family
  temperature: {type: loguniform, low: 1, high: 8}
  gamma: {type: uniform, low: 0.5, high: 2}  # dist's only
  lr: {type: choice, values: [0.00001, 0.003, 0.01]}
  alpha: {type: uniform, low: 0, high: 1}
search:
  num_samples: 2    # --num-samples 5 overrides it
  stop_at_chance: false  # the tiny teacher (1 epoch, 300 images) is at chance; the test searches anyway
  max_concurrent: 1
  scheduler: asha
  grace_period: 1
  reduction_factor: 2
  control: false    # the KD arm alone: the CE arm runs under the very same Tuner code and scheduler
resources:
  cpu: 2
confirm:
  seeds: 3          # --confirm-seeds 1 overrides it: unconfirmed, kd_best is the best completed trial
tracking:
  register: false   # kd_best is logged with its parent run, not registered
"""


def test_asha_search_records_stopped_trials_as_pruned_everywhere(tiny_archive, tmp_path):
    study = tmp_path / "asha.yaml"
    study.write_text(TINY_BASE.replace("kd_reference: {epochs: 2,", "kd_reference: {epochs: 3,") + ASHA)
    r = subprocess.run([sys.executable, "-m", "kdsearch", "search", str(study), "--data", str(tiny_archive),
                        "--results", str(tmp_path / "results"), "--num-samples", "5", "--confirm-seeds", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "results" / "tiny" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 5
    assert any(t["state"] == "pruned" for t in trials)  # seeded: ASHA stops at least one of these trials
    for t in trials:  # the Optuna state follows what actually ran
        assert t["state"] == ("completed" if t["epochs_run"] == "3" else "pruned"), t
    report = json.loads((tmp_path / "results" / "tiny" / "report.json").read_text())
    completed = [t for t in report["trials"] if t["state"] == "completed"]
    assert report["best_config"] == max(completed, key=lambda t: t["val_acc"])["params"]  # its loss's values only
    # one seed: an unconfirmed winner, no intervals and no confirmation runs
    assert report["confirmed"] is False and report["comparison"] == []
    assert all(row["seeds"] == [0] and row["val_acc_sd"] is None for row in report["rows"])
    assert "unconfirmed" in r.stdout.splitlines()[0] and "confirm:" not in r.stderr
    # the breakdown by family: each family's best completed trial, in report.md, a plot, the summary and MLflow
    from mlflow.tracking import MlflowClient
    fams = {f["loss"]: f for f in report["families"]}
    assert set(fams) == {"kd", "dist"}
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    metrics = client.get_run(report["mlflow"]["parent_run_id"]).data.metrics
    assert client.search_registered_models() == [] and "registered" not in report["mlflow"]
    for loss, f in fams.items():
        done = [t for t in completed if t["params"]["loss"] == loss]
        assert f["completed"] == len(done) and f["trials"] == sum(t["params"]["loss"] == loss for t in report["trials"])
        assert (f["best"] or {}).get("val_acc") == max((t["val_acc"] for t in done), default=None)
        assert metrics.get(f"best_val_acc_{loss}") == (f["best"] or {}).get("val_acc")
        assert (f"best {loss}: {f['best']['val_acc']:.2f}% val" if done else f"best {loss}: no completed") in r.stdout
    md = (tmp_path / "results" / "tiny" / "report.md").read_text()
    assert "## By loss family" in md
    families = plot(tmp_path / "results" / "tiny" / "families.png", (7, 4))
    for f, color in zip(report["families"], ("C0", "C1")):  # each family's points in its colour of the cycle
        assert pixels(families, color) > 5, f["loss"]  # a hollow point alone draws its ring
    imp = report["importances"]["kd"]  # over the completed trials (seeded: 3 or more), the same figures in MLflow
    assert set(report["importances"]) == {"kd"} and report["control_note"].startswith("no control arm (search.")
    assert len(completed) >= 3 and set(imp) == {k for t in completed for k in t["params"]}  # what they hold
    assert abs(sum(imp.values()) - 1) < 1e-9 and all(metrics[f"importance_kd_{k}"] == v for k, v in imp.items())
    assert "## Hyperparameter importances" in md
    bars = plot(tmp_path / "results" / "tiny" / "importances.png", (6, 0.45 * len(imp) + 1.4))
    assert pixels(bars, "tab:blue") > 200  # the bars


def test_asha_rungs_come_back_after_a_resume():
    """Tune saves the searcher but not the scheduler: keep_scheduler's state, saved with each snapshot, puts
    ASHA's rungs back, so a resumed trial is judged against the results recorded before the kill."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    from kdsearch.search.tuner import keep_scheduler

    def asha():
        return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=4, grace_period=1,
                             reduction_factor=2)

    before = asha()
    trials = [Trial("tune_trial", config={}, trial_id=f"t{i}", stub=True) for i in range(3)]
    for i, t in enumerate(trials):
        before.on_trial_add(None, t)
        before.on_trial_result(None, t, {"epoch": 1, "val_acc": 10.0 + i})
    state = keep_scheduler(before).get_state()
    after = asha()  # as Tune unpickles it on restore: empty rungs
    keep_scheduler(after).set_state(state)
    assert after.debug_string() == before.debug_string() and "Iter 1.000: 11.0" in after.debug_string()
    # a fourth trial below the rung's cut is stopped, as it would have been without the kill
    late = Trial("tune_trial", config={}, trial_id="t3", stub=True)
    after.on_trial_add(None, late)
    assert after.on_trial_result(None, late, {"epoch": 1, "val_acc": 1.0}) == "STOP"


def test_a_searched_loss_gives_a_conditional_space_and_the_first_trial_is_kd_reference(tmp_path):
    """space.loss makes the space define-by-run: a trial draws only the values its loss takes."""
    from kdsearch.study.schema import load_study
    from kdsearch.study.space import first_point
    study = tmp_path / "families.yaml"
    study.write_text("name: families\nspace:\n  loss: {type: choice, values: [kd, kd_ls, dkd, dist]}\n"
                     "  temperature: {type: loguniform, low: 1, high: 8}\n  alpha: {type: uniform, low: 0, high: 1}\n"
                     "  beta: {type: loguniform, low: 0.5, high: 8}\n  gamma: {type: uniform, low: 0, high: 2}\n")
    space = load_study(study).space
    assert space["beta"].losses == ["dkd", "dist"] and space["gamma"].losses == ["dist"]
    first = first_point(space, load_study(study).baselines.kd_reference, print)
    assert first == {"loss": "kd", "temperature": 4.5, "alpha": 0.8}
    s = make_searcher(space, seed=0, first=first)
    configs = [s.suggest(f"t{i}") for i in range(24)]
    assert {k: v for k, v in configs[0].items() if k != NUMBER} == first
    takes = {"kd": set(), "kd_ls": set(), "dkd": {"beta"}, "dist": {"beta", "gamma"}}
    for c in configs:
        assert set(c) - {NUMBER, "loss", "temperature", "alpha"} == takes[c["loss"]], c
    assert {c["loss"] for c in configs} == set(takes)  # TPE's start-up draws every family
