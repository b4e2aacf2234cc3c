"""Trials a scheduler stops early must reach Optuna as PRUNED, not COMPLETE with a partial score."""
import csv
import json
import subprocess
import sys

from conftest import TINY_BASE
from kdsearch.config import Param
from kdsearch.tuner import make_searcher


def test_a_stopped_trial_is_pruned_and_a_finished_one_complete():
    s = make_searcher({"lr": Param("loguniform", 1e-4, 1e-2), "epochs": Param("int", 1, 5)}, seed=0)
    for tid in ("stopped", "finished", "crashed"):
        s.suggest(tid)
    assert s.trials == {"stopped": (0, "running"), "finished": (1, "running"), "crashed": (2, "running")}
    s.on_trial_result("stopped", {"val_acc": 30.0, "training_iteration": 1, "epoch": 1, "epochs": 4})
    s.on_trial_complete("stopped", {"val_acc": 30.0, "training_iteration": 1, "epoch": 1, "epochs": 4})
    s.on_trial_complete("finished", {"val_acc": 40.0, "training_iteration": 4, "epoch": 4, "epochs": 4})
    s.on_trial_complete("crashed", None, error=True)
    # the states are read back from Optuna's study: the 1-epoch score never reached TPE as a result
    assert s.trials == {"stopped": (0, "pruned"), "finished": (1, "completed"), "crashed": (2, "failed")}


ASHA = """\
space:
  lr: {type: choice, values: [0.00001, 0.003, 0.01]}
  alpha: {type: uniform, low: 0, high: 1}
search:
  num_samples: 5
  max_concurrent: 1
  scheduler: asha
  grace_period: 1
  reduction_factor: 2
resources:
  cpu: 2
confirm:
  seeds: 1          # unconfirmed: kd_best is the best completed trial, the rule under test here
"""


def test_asha_search_records_stopped_trials_as_pruned_everywhere(tiny_archive, tmp_path):
    study = tmp_path / "asha.yaml"
    study.write_text(TINY_BASE.replace("kd_reference: {epochs: 2,", "kd_reference: {epochs: 3,") + ASHA)
    r = subprocess.run([sys.executable, "-m", "kdsearch", "search", str(study), "--data", str(tiny_archive),
                        "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "results" / "tiny" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 5
    assert any(t["state"] == "pruned" for t in trials)  # seeded: ASHA stops at least one of these trials
    for t in trials:  # the Optuna state follows what actually ran
        assert t["state"] == ("completed" if t["epochs_run"] == "3" else "pruned"), t
    report = json.loads((tmp_path / "results" / "tiny" / "report.json").read_text())
    completed = [t for t in report["trials"] if t["state"] == "completed"]
    assert report["best_config"] == max(completed, key=lambda t: t["val_acc"])["params"]
