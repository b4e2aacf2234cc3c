"""A search tracked by a real `mlflow server` on loopback, read back through its REST API as the UI reads it:
the experiment's kind, the runs' names, numeric parameters, and the registered student with its alias."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import TINY_STUDY

SEARCH = """\
search:
  num_samples: 2
  stop_at_chance: false  # the tiny teacher (1 epoch, 300 images) is at chance; the test searches anyway
  max_concurrent: 2
confirm:
  top_k: 1
  seeds: 2
tracking:
  uri: {uri}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(uri, path, body=None):
    """GET (or POST `body`) MLflow's REST API; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{uri}/api/2.0/mlflow/{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp / 'server.db'}", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "server.log", "w"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri, tmp
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def searched(server, tiny_archive):
    uri, tmp = server
    study = tmp / "tiny.yaml"
    study.write_text(TINY_STUDY + SEARCH.format(uri=uri))
    done = subprocess.run([sys.executable, "-m", "kdsearch", "search", str(study), "--data", str(tiny_archive),
                           "--results", str(tmp / "results")], cwd=tmp, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp / "results" / "tiny" / "report.json").read_text())
    exp = api(uri, "experiments/get-by-name?experiment_name=tiny")["experiment"]
    runs = api(uri, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    return uri, report, exp, runs


def tags(entity):
    return {t["key"]: t["value"] for t in entity.get("tags", [])} if "tags" in entity else \
        {t["key"]: t["value"] for t in entity["data"].get("tags", [])}


def test_the_experiment_opens_on_its_runs(searched):
    uri, report, exp, _ = searched
    assert tags(exp)["mlflow.experimentKind"] == "custom_model_development"  # a model-training experiment
    # the printed link opens the runs table, not the UI's GenAI overview (its workflow switch's default)
    link = f"{uri}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning"
    assert report["mlflow"]["ui_command"] == f"open {link}"
    with urllib.request.urlopen(link, timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read().lower()


def test_runs_are_named_by_what_they_tried_and_their_params_are_numbers(searched):
    _, report, _, runs = searched
    trials = {(tags(r)["kdsearch.arm"], int(tags(r)["mlflow.runName"].split()[2])): r for r in runs
              if tags(r).get("kdsearch.stage") == "search"}
    assert sorted(trials) == sorted((t["arm"], t["number"]) for t in report["trials"])
    assert sorted(trials) == [("ce", 0), ("ce", 1), ("kd", 0), ("kd", 1)]  # the same budget for each arm
    first = tags(trials["kd", 0])["mlflow.runName"]
    assert first == "kd trial 0 · T 4.5 α 0.8 lr 1e-3 2 ep", first  # the notebook's point, kd_reference's
    assert tags(trials["ce", 0])["mlflow.runName"] == "ce trial 0 · lr 1e-3 1 ep"  # student_ce's point
    for (arm, _), r in trials.items():
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        assert {k: float(v) for k, v in params.items()}.keys() == (
            {"temperature", "alpha", "lr", "epochs"} if arm == "kd" else {"lr", "epochs"})  # no distillation value
        assert re.fullmatch(rf"{arm} trial \d+ · " + (r"T [\d.]+ α [\d.]+ " if arm == "kd" else "")
                            + r"lr [\de.-]+ \d+ ep", tags(r)["mlflow.runName"])
    confirms = sorted(tags(r)["mlflow.runName"] for r in runs if tags(r).get("kdsearch.stage") == "confirm")
    assert confirms and all(re.fullmatch(r"confirm · [\w=]+ · seed 1", name) for name in confirms), confirms


def test_the_best_student_is_registered_with_its_alias_and_verdicts(searched):
    uri, report, _, _ = searched
    # kd_best of the tiny study is at chance: registered through the server, but not as champion
    assert report["mlflow"]["registered"] == {"model": "tiny-student", "version": 1, "aliases": []}
    version = api(uri, "model-versions/get?name=tiny-student&version=1")["model_version"]
    assert version["version"] == "1" and not version.get("aliases")
    assert version["description"].startswith("kd_best of search 'tiny'") and "test accuracy:" in version["description"]
    assert tags(version)["kdsearch.parent_run_id"] == report["mlflow"]["parent_run_id"]
