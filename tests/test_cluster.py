"""`kdsearch search --address` joins a running Ray cluster, whose workers need no data files: the data and the
teacher's logits reach the trials through the object store."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import TINY_STUDY
from test_search import SEARCH

HEAD = "127.0.0.2:6390"  # a loopback address of its own, so this cluster is told apart from any local Ray


@pytest.fixture
def ray_head():
    tmp = tempfile.mkdtemp(prefix="kdray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.2", "--port=6390", "--num-cpus=2",
                    "--memory=2000000000", "--object-store-memory=300000000", "--include-dashboard=false",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
    yield env
    # stop only this cluster's processes (`ray stop` would stop every Ray on the machine): raylet first
    procs = [p for p in psutil.process_iter(["cmdline"]) if tmp in " ".join(p.info["cmdline"] or [])]
    procs.sort(key=lambda p: "gcs_server" in " ".join(p.info["cmdline"] or []))
    for p in procs:
        try:
            p.terminate()
            p.wait(10)
        except psutil.Error:
            pass
    for p in psutil.process_iter(["cmdline"]):  # workers of the session, started without the temp path
        cmd = " ".join(p.info["cmdline"] or [])
        if "127.0.0.2" in cmd and "ray" in cmd:
            p.kill()
    time.sleep(1)
    shutil.rmtree(tmp, ignore_errors=True)


def test_search_joins_an_existing_cluster(ray_head, tiny_archive, tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(TINY_STUDY + SEARCH)
    r = subprocess.run([sys.executable, "-m", "kdsearch", "search", str(study), "--data", str(tiny_archive),
                        "--results", str(tmp_path / "results"), "--address", HEAD],
                       cwd=tmp_path, env=ray_head, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"ray: joined {HEAD}" in r.stderr
    report = json.loads((tmp_path / "results" / "tiny" / "report.json").read_text())
    assert report["num_trials"] == 3 and all(t["state"] == "completed" for t in report["trials"])
    assert report["rows"][-1]["model"] == "kd_best"
