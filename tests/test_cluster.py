"""`kdsearch search --address` on a two-node Ray cluster on loopback: the workers need no data files (the data and
the teacher's logits reach the trials through the object store), and when the worker node is lost mid-search its
trials are retried on the head from their checkpoints and the study completes with every trial."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import TINY_BASE, TINY_SPACE
from test_networks import NET_FILE
from test_resume import SEARCH

# trials of 8 to 10 epochs, so that both are still training when the worker node is lost (with test_resume's
# 3-4 epochs, the worker's trial sometimes finished first and nothing was left to retry)
# the student is a network file of the user's: it reaches the worker node through Ray's runtime environment
STUDY = (TINY_BASE.replace("kd_reference: {epochs: 2,", "kd_reference: {epochs: 10,")
         + TINY_SPACE.replace("epochs: {type: int, low: 1, high: 2}", "epochs: {type: int, low: 8, high: 10}") + SEARCH
         + "models:\n  student: tiny_net.py:Net\n").replace("search:\n", "search:\n  control: false\n")

HEAD = "127.0.0.2:6390"  # loopback addresses of their own, so this cluster is told apart from any local Ray
WORKER_IP = "127.0.0.3"
@pytest.fixture
def cluster():
    """A head node and a worker node, one CPU each; yields (env, the worker's raylet process)."""
    tmp = tempfile.mkdtemp(prefix="kdray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    # without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which a local Ray started in this process (kdsearch's
    # start_ray, in an earlier test) leaves in its environment: it is Ray's single-node path, and a node that
    # joins under it aborts
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}, "RAY_TMPDIR": tmp,
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(Path(sys.executable).with_name("ray"))
    node = ["--num-cpus=1", "--memory=2000000000", "--object-store-memory=200000000", "--disable-usage-stats"]
    before = {p.pid for p in psutil.process_iter()}
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.2", "--port=6390",
                        "--include-dashboard=false", *node], env=env, check=True, capture_output=True, timeout=120)
        r = subprocess.run([ray, "start", f"--address={HEAD}", f"--node-ip-address={WORKER_IP}", *node], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        raylet = next(p for p in psutil.process_iter(["cmdline"])
                      if "raylet" in " ".join(p.info["cmdline"] or [])[:200] and WORKER_IP in
                      " ".join(p.info["cmdline"] or []))
        yield env, raylet
    finally:
        # stop only what this test started (`ray stop` would stop every Ray on the machine): raylets first
        mine = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before and any(
            s in " ".join(p.info["cmdline"] or []) for s in (tmp, "127.0.0.2", WORKER_IP))]
        started = {p.pid: p for root in mine for p in [root, *_children(root)]}.values()
        gcs = [p for p in started if "gcs_server" in " ".join(_cmdline(p))]
        for group in ([p for p in started if p not in gcs], gcs):  # the GCS last; each group at once
            for p in group:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
            for p in psutil.wait_procs(group, timeout=10)[1]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        time.sleep(1)
        shutil.rmtree(tmp, ignore_errors=True)


def _children(p):
    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_search_on_a_cluster_survives_losing_the_worker_node(cluster, tiny_archive, tmp_path):
    env, raylet = cluster
    study = tmp_path / "tiny.yaml"
    study.write_text(STUDY)
    origins = tmp_path / "origins.txt"
    (tmp_path / "tiny_net.py").write_text(NET_FILE.format(origins=str(origins)))
    p = subprocess.Popen([sys.executable, "-m", "kdsearch", "search", str(study), "--data", str(tiny_archive),
                          "--results", str(tmp_path / "results"), "--address", HEAD], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log, running = [], set()
    for line in p.stderr:
        log.append(line)
        if line.startswith("kd trial ") and " epoch " in line and "stored run" not in line:  # trial 0 replays
            running.add(line.split()[2])
        if len(running) == 2 and not any(m.startswith("-- the worker's raylet killed") for m in log):
            # the worker node is lost mid-search: the second trial has just reported its first of 8 or more
            # epochs, the first is a few epochs in; one runs on each node's one CPU
            raylet.kill()
            log.append(f"-- the worker's raylet killed after: {line}")
    p.wait(600)
    err = "".join(log)
    assert p.returncode == 0, err[-3000:]
    report = json.loads((tmp_path / "results" / "tiny" / "report.json").read_text())
    assert sorted(t["number"] for t in report["trials"]) == [0, 1, 2, 3]
    assert all(t["state"] == "completed" for t in report["trials"])
    # the lost node's trial failed once and was retried on the head from its last checkpoint (a search on a Ray
    # of its own, not the cluster, would have lost nothing)
    from mlflow.tracking import MlflowClient
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    parent = client.get_run(report["mlflow"]["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                  f"and tags.`kdsearch.stage` = 'search'")
    assert sorted(c.data.tags.get("kdsearch.failures", "0") for c in children) == ["0", "0", "0", "1"], err[-3000:]
    # the trials imported the student's file from what Ray's runtime environment brought, not from tmp_path
    seen = set(origins.read_text().split())
    assert str(tmp_path / "tiny_net.py") in seen and any("py_modules_files" in p for p in seen), seen
    assert report["rows"][-1]["model"] == "kd_best"
