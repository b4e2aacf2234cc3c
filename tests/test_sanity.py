"""A study that cannot work is said before the search spends its trials (phase/sanity.py): a teacher at chance
(it stops the search), a teacher no better than student_ce, too few steps an epoch, a flat validation curve, and
a winner at chance never made champion."""
import json
import subprocess
import sys

from conftest import TINY_STUDY

from kdsearch.core.records import Run
from kdsearch.phase.baselines import EnginePhase
from kdsearch.phase.sanity import at_chance, best_at_chance, chance, findings
from kdsearch.study.schema import load_study


def run(model, val_acc, curve=(), batch=256):
    return Run(model=model, key=model, params=1, val_acc=val_acc, test_acc=val_acc, train_s=1.0,
               history=[{"epoch": i + 1, "val_acc": v} for i, v in enumerate(curve)], config={})


def phase(teacher, **baselines):
    rows = {"student_mse": run("student_mse", 40.0), "student_ce": run("student_ce", 50.0),
            "kd_reference": run("kd_reference", 51.0)}
    return EnginePhase(teacher, {**rows, **baselines}, table=None)


def study(tmp_path, text="name: s\n"):
    (tmp_path / "s.yaml").write_text(text)
    return load_study(tmp_path / "s.yaml")


def test_chance_is_one_over_the_classes_within_two_standard_errors():
    level, margin = chance(10, 1000)
    assert level == 10.0 and abs(margin - 200 * (0.1 * 0.9 / 1000) ** 0.5) < 1e-12  # 1.9 points
    assert at_chance(11.8, 10, 1000) and not at_chance(12.0, 10, 1000) and at_chance(5.0, 10, 1000)


def test_each_finding_and_only_a_teacher_at_chance_stops(tmp_path):
    s = study(tmp_path)  # the notebook's recipes: batch 256, on 5,000 images 20 steps an epoch
    assert findings(s, phase(run("teacher", 80.0, (60.0, 70.0, 80.0))), 5000, 1000, 10) == []
    at = findings(s, phase(run("teacher", 10.5)), 5000, 1000, 10)
    assert [(f.kind, f.stops, f.model) for f in at] == [("teacher_at_chance", True, "teacher")]
    assert at[0].line.startswith("the teacher scores 10.50% on validation, no better than chance (10.0% +- 1.9 "
                                 "over 1000 images)") and "search.stop_at_chance: false" in at[0].line
    go_on = study(tmp_path, "name: s\nsearch:\n  stop_at_chance: false\n")
    assert [f.stops for f in findings(go_on, phase(run("teacher", 10.5)), 5000, 1000, 10)] == [False]
    weak = findings(s, phase(run("teacher", 45.0)), 5000, 1000, 10)
    assert [f.kind for f in weak] == ["teacher_not_better"] and "cannot help" in weak[0].line
    # 1,237 images at batch 256: 5 steps an epoch, for the teacher and each baseline alike
    few = findings(s, phase(run("teacher", 80.0)), 1237, 1000, 10)
    assert [(f.kind, f.line.split(":")[0]) for f in few] == [("few_steps", n) for n in (
        "teacher", "student_mse", "student_ce", "kd_reference")]
    assert "5 optimizer steps an epoch (batch 256 over 1237 training images), fewer than 20" in few[0].line
    flat = findings(s, phase(run("teacher", 80.0), student_ce=run("student_ce", 50.0, (49.5, 50.5, 50.0))),
                    5000, 1000, 10)
    assert [(f.kind, f.model) for f in flat] == [("flat", "student_ce")]
    assert "validation accuracy flat over its 3 epochs (49.50% to 50.50%)" in flat[0].line
    rows = [{"model": "kd_best", "val_acc": 11.0}, {"model": "ce_best", "val_acc": 30.0},
            {"model": "student_ce", "val_acc": 9.0}]  # a winner at chance only: a baseline is no champion anyway
    assert [f.model for f in best_at_chance(rows, 1000, 10)] == ["kd_best"]


def test_a_teacher_at_chance_stops_the_search_in_one_line_before_any_trial(tiny_archive, tmp_path):
    """The tests' tiny teacher (1 epoch on 300 images) scores 12 % on 100 validation images: chance."""
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    r = subprocess.run([sys.executable, "-m", "kdsearch", "search", "tiny.yaml", "--data", str(tiny_archive),
                        "--results", "results"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("kdsearch: error: the teacher scores ") and "no better than chance (10.0% +- 6.0 over " \
        "100 images)" in last and last.endswith("or set search.stop_at_chance: false to search anyway"), last
    assert "check: the teacher scores" in r.stderr and "check: teacher: 5 optimizer steps an epoch" in r.stderr
    folder = tmp_path / "results" / "tiny"
    assert not (folder / "ray").exists() and not (folder / "report.json").exists()  # no trial, no report
    assert json.loads((folder / "search.json").read_text())["status"] == "failed"
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # no parent run
