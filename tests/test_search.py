"""The search end to end with a real local Ray, real Optuna and MLflow on an sqlite file."""
import csv
import json
import subprocess
import sys

import pytest

from conftest import TINY_STUDY

SEARCH = """\
search:
  num_samples: 3
  max_concurrent: 2
resources:
  cpu: 1
"""


def kdsearch(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kdsearch", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def searched(tiny_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    study = tmp / "tiny.yaml"
    study.write_text(TINY_STUDY + SEARCH)
    first = kdsearch("search", study, "--data", tiny_archive, "--results", tmp / "results", cwd=tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    second = kdsearch("search", study, "--data", tiny_archive, "--results", tmp / "results", "--name", "again",
                      cwd=tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp / "results", first, second


def test_report_has_every_row_and_the_notebook_point_came_first(searched):
    results, first, _ = searched
    report = json.loads((results / "tiny" / "report.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["teacher", "student_mse", "student_ce", "kd_reference", "kd_best"]
    for r in report["rows"]:
        assert set(r) >= {"model", "params", "val_acc", "test_acc", "config"}
        assert 0 <= r["val_acc"] <= 100 and 0 <= r["test_acc"] <= 100
    assert report["num_trials"] == 3 and set(report["best_config"]) == {"temperature", "alpha", "lr", "epochs"}
    assert set(report["mlflow"]) >= {"tracking_uri", "experiment", "parent_run_id"}
    with open(results / "tiny" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert trials[0]["number"] == "0"
    first_params = {k: float(trials[0][k]) for k in ("temperature", "alpha", "lr", "epochs")}
    assert first_params == {"temperature": 4.5, "alpha": 0.8, "lr": 0.001, "epochs": 2.0}
    assert all(t["state"] == "completed" for t in trials)
    for png in ("history.png", "params.png", "curves.png"):
        assert (results / "tiny" / png).stat().st_size > 1000
    assert "report.md" in first.stdout and "mlflow ui --backend-store-uri sqlite:///" in first.stdout
    assert "ray: started a local instance on 127.0.0.1; dashboard http://127.0.0.1:" in first.stderr
    assert "kd_best" in first.stdout
    t = report["timings"]  # three parts that add up, each printed
    assert min(t["engine_s"], t["trial_training_s"], t["overhead_s"]) > 0
    assert t["engine_s"] + t["trial_training_s"] + t["overhead_s"] == pytest.approx(t["total_s"])
    assert (f"{t['engine_s']:.0f} s data, teacher, baselines and logits; {t['trial_training_s']:.0f} s training "
            f"trials; {t['overhead_s']:.0f} s") in first.stdout


def test_mlflow_has_one_parent_and_a_child_per_trial_with_per_epoch_metrics(searched, tmp_path):
    from mlflow.tracking import MlflowClient
    results, _, _ = searched
    report = json.loads((results / "tiny" / "report.json").read_text())
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name(report["mlflow"]["experiment"])
    parent_id = report["mlflow"]["parent_run_id"]
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(children) == 3
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["kdsearch.state"] == "completed"
        assert set(child.data.params) == {"temperature", "alpha", "lr", "epochs"}
        epochs = int(child.data.params["epochs"])
        for metric in ("val_acc", "train_loss", "loss_hard", "loss_soft"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, metric)] == list(range(1, epochs + 1))
        alpha = float(child.data.params["alpha"])  # the logged terms make up the logged loss
        hard, soft, total = (client.get_metric_history(child.info.run_id, k)[-1].value
                             for k in ("loss_hard", "loss_soft", "train_loss"))
        assert total == pytest.approx(alpha * hard + (1 - alpha) * soft, rel=1e-4)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "kd_best_test_acc" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent_id)} | {
        a.path for a in client.list_artifacts(parent_id, "report")}
    assert "tiny.yaml" in artifacts and "report/report.json" in artifacts
    logged = client.download_artifacts(parent_id, "report/report.json", str(tmp_path))
    assert json.loads(open(logged).read()) == report  # the final report, timings included
    models = client.search_logged_models([exp.experiment_id])
    assert any(m.source_run_id == parent_id and m.name == "kd_best" for m in models)


def test_a_second_search_trains_no_teacher_or_baseline_again(searched):
    results, _, second = searched
    assert "training" not in second.stderr and second.stderr.count("reusing the stored run") == 4
    assert "teacher logits:" not in second.stderr  # the table was stored too
    assert (results / "again" / "report.json").exists()


def test_report_command_rerenders_without_training_or_torch(searched, tmp_path):
    results, _, _ = searched
    (results / "tiny" / "report.md").unlink()
    code = ("import sys\n"
            "from kdsearch.cli import main\n"
            f"code = main(['report', {str(results / 'tiny')!r}])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (results / "tiny" / "report.md").exists() and "kd_best" in r.stdout and r.stderr == ""
    bad = kdsearch("report", tmp_path / "nothing", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("kdsearch: error:") and "report.json" in bad.stderr


def test_the_local_ray_serves_its_dashboard_on_loopback_without_a_token(tmp_path):
    code = ("import urllib.request\n"
            "from kdsearch.tuner import start_ray\n"
            "url = start_ray(None, print)\n"
            "import ray\n"
            "assert url.startswith('http://127.0.0.1:'), url\n"
            "print(urllib.request.urlopen(url + '/api/cluster_status', timeout=30).status)\n"
            "print(ray.nodes()[0]['NodeManagerAddress'])\n"
            "ray.shutdown()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["200", "127.0.0.1"]  # open (no 401) and the node stays on loopback
