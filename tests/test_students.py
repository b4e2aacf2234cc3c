"""Several students in one study (issue 28): each searched with the same budget through Ray, the teacher and its
logit table made once, each student's winners confirmed, its cost measured, the front and the recommendation."""
import csv
import json

import pytest
from conftest import TINY_BASE, TINY_SPACE, kdsearch

from kdsearch.core.errors import UserError

NARROW = """\
import torch.nn as nn


def Net(num_classes):  # narrower than the notebook's student: one convolution of 8 channels
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 16 * 16, num_classes))
"""
# its FLOPs per 32x32 image by hand: the convolution's 8 x 32 x 32 outputs of 3 x 3 x 3 multiply-adds each, the
# linear layer's 10 outputs of 2048 (a multiply-add is 2 FLOPs; bias, ReLU and pooling are not counted)
NARROW_FLOPS = 2 * (8 * 32 * 32) * (3 * 3 * 3) + 2 * (8 * 16 * 16) * 10
MODELS = 'models:\n  student: [student, "narrow.py:Net"]\n'
SEARCH = """\
search:
  num_samples: 2
  stop_at_chance: false
  max_concurrent: 2
resources:
  cpu: 1
confirm:
  top_k: 1
  seeds: 2
"""



def sweep_front(entries):
    """The front by a sweep, fastest first: a student is kept when more accurate than every faster one kept."""
    kept, best = [], float("-inf")
    for e in sorted(entries, key=lambda e: (e["latency_ms_b1"], -e["kd_best"]["test_acc"])):
        if e["kd_best"]["test_acc"] > best:
            kept.append(e["spec"])
            best = e["kd_best"]["test_acc"]
    return kept


@pytest.fixture(scope="module")
def searched(tiny_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("students")
    (tmp / "narrow.py").write_text(NARROW)
    (tmp / "two.yaml").write_text(TINY_BASE + MODELS + TINY_SPACE + SEARCH)
    r = kdsearch("search", "two.yaml", "--data", tiny_archive, "--results", "results", cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, r, json.loads((tmp / "results" / "tiny" / "report.json").read_text())


def test_each_student_is_searched_with_the_same_budget_and_the_teacher_once(searched):
    tmp, r, report = searched
    specs = ["student", "narrow.py:Net"]
    assert [e["spec"] for e in report["students"]] == specs
    counts = {}
    for t in report["trials"]:
        counts[t["student"], t["arm"]] = counts.get((t["student"], t["arm"]), 0) + 1
    assert counts == {(s, arm): 2 for s in specs for arm in ("kd", "ce")}  # the same trials per student and arm
    # the teacher trained once and its logit table computed once, shared by both students
    assert r.stderr.count("teacher: training") == 1, r.stderr
    assert r.stderr.count("teacher logits: ") == 1
    assert len(list((tmp / "results" / "cache" / "logits").glob("*.pt"))) == 1
    for e in report["students"]:  # each student's winners confirmed on the seeds
        assert e["kd_best"]["seeds"] == [0, 1] and e["ce_best"]["seeds"] == [0, 1]
        assert set(e["verdict"]) == {"diff", "ci95", "verdict"}
    # each student's own report, and Tune's runs of each student and arm apart
    for label in ("student", "narrow_py_Net"):
        own = json.loads((tmp / "results" / "tiny" / "students" / label / "report.json").read_text())
        assert {t["student"] for t in own["trials"]} == {own["trials"][0]["student"]}
        assert (tmp / "results" / "tiny" / f"ray-{label}").is_dir()
        assert (tmp / "results" / "tiny" / f"ray-{label}-ce").is_dir()
    with open(tmp / "results" / "tiny" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted({row["student"] for row in rows}) == sorted(specs) and len(rows) == 8


def test_costs_are_measured_and_the_front_and_recommendation_follow_them(searched):
    tmp, r, report = searched
    by = {e["spec"]: e for e in report["students"]}
    assert by["narrow.py:Net"]["flops"] == NARROW_FLOPS
    assert by["narrow.py:Net"]["params"] == 8 * 3 * 9 + 8 + 2048 * 10 + 10
    assert by["student"]["params"] == 545_098
    for e in report["students"]:
        assert 0 < e["latency_ms_b1"] < e["latency_ms_b64"] and e["latency"]["repeats"] >= 5
        assert e["latency"]["device"].startswith("cpu") and {"torch", "git_commit", "cpu_threads"} <= set(e["latency"])
    assert report["front"] == sweep_front(report["students"])
    best = max(e["kd_best"]["test_acc"] for e in report["students"])
    fits = [by[s] for s in report["front"] if by[s]["kd_best"]["test_acc"] >= best - report["within"]]
    assert report["recommended"] == min(fits, key=lambda e: (e["params"], e["latency_ms_b1"]))["spec"]
    assert report["within"] == 1.0
    md = (tmp / "results" / "tiny" / "report.md").read_text()
    assert "## Which student" in md and f"of the best: {report['recommended']} (" in md
    assert (tmp / "results" / "tiny" / "front.png").is_file()
    assert f"of the best: {report['recommended']} (" in r.stdout
    # the search's student.pt is the recommended one's, and either exports by its spec
    label = by[report["recommended"]]["label"]
    assert (tmp / "results" / "tiny" / "student.pt").read_bytes() == \
        (tmp / "results" / "tiny" / "students" / label / "student.pt").read_bytes()
    out = kdsearch("export", "results/tiny", "--student", "narrow.py:Net", "--format", "state_dict", cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert (tmp / "results" / "tiny" / "students" / "narrow_py_Net" / "student.pt.json").is_file() or \
        "narrow_py_Net" in out.stdout
    bad = kdsearch("export", "results/tiny", "--student", "resnet", cwd=tmp)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "has no student 'resnet'; fix: name one of student, narrow.py:Net" in bad.stderr


def test_mlflow_tags_each_trial_with_its_student_and_registers_each_students_best(searched):
    from mlflow.tracking import MlflowClient
    _, _, report = searched
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    parent = report["mlflow"]["parent_run_id"]
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent}' and tags.`kdsearch.stage` = 'search'")
    assert sorted(run.data.tags["kdsearch.student"] for run in runs) == ["narrow_py_Net"] * 4 + ["student"] * 4
    assert all(run.info.run_name.startswith(run.data.tags["kdsearch.student"] + " ") for run in runs)
    for label in ("student", "narrow_py_Net"):
        versions = client.search_model_versions(f"name = 'tiny-student-{label}'")
        assert len(versions) == 1


def test_a_student_list_is_checked_in_one_line_each(tiny_archive, tmp_path):
    (tmp_path / "narrow.py").write_text(NARROW)
    (tmp_path / "bad.py").write_text("def Net(num_classes):\n    raise ValueError('no such width')\n")
    for models, message in [
            ('models:\n  student: [student, student]\n',
             "models.student: names 'student' twice (a student is named by its spec); fix: remove one of them"),
            ('models:\n  student: [student, "bad.py:Net"]\n',
             "models.student[1]: building bad.py:Net (num_classes=10) raised ValueError: no such width")]:
        (tmp_path / "s.yaml").write_text(TINY_BASE + models + TINY_SPACE)
        r = kdsearch("baselines", "s.yaml", "--data", tiny_archive, "--results", "results", cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert message in r.stderr, r.stderr
        assert not (tmp_path / "results").exists()


def test_resume_after_the_student_list_changed_is_refused(tmp_path):
    from kdsearch.phase.context import resolve_networks
    from kdsearch.search.pipeline import describe
    from kdsearch.search.state import SearchState
    from kdsearch.study.schema import load_study
    (tmp_path / "narrow.py").write_text(NARROW)
    (tmp_path / "one.yaml").write_text(TINY_BASE + TINY_SPACE)
    (tmp_path / "two.yaml").write_text(TINY_BASE + MODELS + TINY_SPACE)
    one, two = (load_study(tmp_path / f) for f in ("one.yaml", "two.yaml"))
    state = SearchState(tmp_path / "results" / "tiny")
    state.lock()
    state.write(status="interrupted", stage="the kd search", study=describe(one, resolve_networks(one, "one.yaml")),
                command="search one.yaml")
    with pytest.raises(UserError, match=r"--resume: the study differs from the interrupted search's at "
                                        r"models.student, networks.student"):
        state.begin(describe(two, resolve_networks(two, tmp_path / "two.yaml")), True, print)


def test_train_and_baselines_take_each_student(searched, tiny_archive):
    tmp, _, report = searched
    r = kdsearch("train", "two.yaml", "--data", tiny_archive, "--results", "results", "--recipe", "student_ce",
                 "--student", "narrow.py:Net", cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert "reusing the stored run" in r.stderr  # the search's own student_ce of the narrow student
    saved = json.loads((tmp / "results" / "tiny" / "train" / "narrow_py_Net" / "student_ce.json").read_text())
    own = json.loads((tmp / "results" / "tiny" / "students" / "narrow_py_Net" / "report.json").read_text())
    assert saved["stored"] == [True] and saved["seeds"] == [0]
    assert saved["val_accs"][0] == next(r["val_accs"][0] for r in own["rows"] if r["model"] == "student_ce")
    bad = kdsearch("train", "two.yaml", "--data", tiny_archive, "--results", "results", "--student", "resnet",
                   cwd=tmp)
    assert bad.returncode == 2 and "--student 'resnet': the study has no such student; fix: name one of student, " \
        "narrow.py:Net" in bad.stderr
    b = kdsearch("baselines", "two.yaml", "--data", tiny_archive, "--results", "results", cwd=tmp)
    assert b.returncode == 0 and "student narrow.py:Net:" in b.stdout and b.stdout.count("(stored)") >= 6, b.stdout
    assert (tmp / "results" / "tiny" / "students" / "narrow_py_Net" / "baselines.json").is_file()
