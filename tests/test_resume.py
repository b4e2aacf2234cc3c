"""A search survives a kill: SIGKILL of the whole process group mid-trial of its CE control arm (its KD arm done),
then --resume, with real Ray, Optuna and MLflow. Also the search's run-time refusals (--resume rules, the lock)."""
import csv
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import TINY_BASE, TINY_SPACE, kdsearch

SEARCH = """\
search:
  num_samples: 4
  stop_at_chance: false  # the tiny teacher (1 epoch, 300 images) is at chance; the test searches anyway
  max_concurrent: 2
resources:
  cpu: 1
confirm:
  seeds: 1
"""
# kd_reference and student_ce train 4 epochs, inside the space's 3-4: each arm's first trial is its baseline's own
# stored run (replayed, not trained); a CE trial that trains is killed in the middle of it
STUDY = (TINY_BASE.replace("kd_reference: {epochs: 2,", "kd_reference: {epochs: 4,")
         .replace("student_ce: {epochs: 1,", "student_ce: {epochs: 4,")
         + TINY_SPACE.replace("epochs: {type: int, low: 1, high: 2}", "epochs: {type: int, low: 3, high: 4}") + SEARCH)



def kill_when(args, pattern, log_path, sig=signal.SIGKILL, unless="\0"):
    """Start a search in its own process group and send `sig` to the whole group (as SIGKILL of everything, or
    Ctrl-C in a terminal) when a stderr line has every string of `pattern` and not `unless`; return (its stderr, its exit status,
    the listening sockets of the search and every process it started, seen just before)."""
    listening = None
    with open(log_path, "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "kdsearch", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        for line in p.stderr:
            log.write(line)
            if all(part in line for part in pattern) and unless not in line:
                listening = listening_sockets(p.pid)
                os.killpg(p.pid, sig)
                break
        log.write(p.stderr.read())
        p.wait(60)
    assert listening is not None, f"no line with {pattern}: " + open(log_path).read()[-2000:]
    return open(log_path).read(), p.returncode, listening


def listening_sockets(pid):
    """(process name, address, port) of each listening TCP socket of `pid` and its descendants."""
    root = psutil.Process(pid)
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            found |= {(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def resumed(tiny_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    study = tmp / "tiny.yaml"
    study.write_text(STUDY)
    args = ["search", study, "--data", tiny_archive, "--results", tmp / "results"]
    # the KD arm finished, a CE trial that trains (not student_ce's replayed run) is killed after its 2nd epoch
    _, _, listening = kill_when(args, ("ce trial ", ": epoch 2/"), tmp / "killed.log", unless="stored run")
    refused = kdsearch(*args)
    other = tmp / "other.yaml"
    other.write_text(STUDY.replace("num_samples: 4", "num_samples: 4\n  seed: 7"))
    differs = (kdsearch("search", other, *args[2:], "--resume"), kdsearch(*args, "--resume", "--no-control"))
    # resumed, then stopped with Ctrl-C as soon as a trial reports
    ctrl_c = kill_when([*args, "--resume"], ("trial ",), tmp / "ctrl_c.log", signal.SIGINT)
    ctrl_c = (*ctrl_c[:2], json.loads((tmp / "results" / "tiny" / "search.json").read_text())["status"],
              mlflow_statuses(tmp / "results"))
    again = kdsearch(*args, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    return tmp / "results", refused, differs, again, listening, ctrl_c


def mlflow_statuses(results):
    """{run name: status} of every run of the study's experiment."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    return {r.info.run_name: r.info.status for r in client.search_runs([exp.experiment_id], max_results=1000)}


def test_ctrl_c_ends_the_runs_killed_and_says_how_to_resume(resumed):
    stderr, code, status, runs = resumed[-1]
    assert code == 130 and status == "interrupted", stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("kdsearch: interrupted; nothing finished is lost. To go on: kdsearch search ") and \
        last.endswith(" --resume"), last
    assert "Tuner.restore" not in stderr  # Tune's own hint, for its Python API, is not shown
    assert runs["tiny"] == "KILLED" and "RUNNING" not in runs.values(), runs


def test_every_listening_socket_of_a_search_is_on_loopback(resumed):
    listening = resumed[4]
    assert any(name.startswith(("gcs_server", "raylet")) for name, _, _ in listening), listening  # Ray's seen
    def loopback(ip):
        ip = ipaddress.ip_address(ip)
        return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # ::ffff:127.0.0.1 is 127.0.0.1

    assert all(loopback(ip) for _, ip, _ in listening), listening


def test_an_interrupted_search_refuses_without_resume_or_with_another_study(resumed):
    _, refused, (differs, no_control) = resumed[:3]
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "did not finish (running); fix: add --resume to continue it, or give another --name" in refused.stderr
    assert differs.returncode == 2 and "the study differs from the interrupted search's at search.seed" in \
        differs.stderr, differs.stderr
    assert no_control.returncode == 2 and no_control.stderr.count("\n") == 1, no_control.stderr
    assert "the interrupted search 'tiny' ran with the CE control arm; fix: resume it without --no-control" in \
        no_control.stderr


def test_the_resumed_search_has_each_trial_once_everywhere(resumed):
    results = resumed[0]
    report = json.loads((results / "tiny" / "report.json").read_text())
    trials = report["trials"]
    for arm in ("kd", "ce"):  # Optuna's numbers: each trial of each arm once, the same budget for both
        assert sorted(t["number"] for t in trials if t["arm"] == arm) == [0, 1, 2, 3]
        # the sampler's random state came back: no proposal after the resume repeats one from before it
        assert len({json.dumps(t["params"], sort_keys=True) for t in trials if t["arm"] == arm}) == 4
    assert len({t["trial_id"] for t in trials}) == 8
    assert json.loads((results / "tiny" / "search.json").read_text())["arms_done"] == ["kd", "ce"]
    with open(results / "tiny" / "trials.csv") as f:
        assert sorted((r["arm"], int(r["number"])) for r in csv.DictReader(f)) == sorted(
            (arm, n) for arm in ("kd", "ce") for n in range(4))
    from mlflow.tracking import MlflowClient
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name(report["mlflow"]["experiment"])
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kdsearch.kind") == "search"]
    assert [p.info.run_id for p in parents] == [report["mlflow"]["parent_run_id"]]  # continued, not a second
    assert parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("kdsearch.stage") == "search"]
    assert sorted(r.data.tags["kdsearch.trial_id"] for r in children) == sorted(t["trial_id"] for t in trials)
    by_id = {t["trial_id"]: t for t in trials}
    for r in children:  # one point per epoch, though the killed trial trained an epoch or two again
        assert r.data.tags["kdsearch.arm"] == by_id[r.data.tags["kdsearch.trial_id"]]["arm"]
        logged = [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "val_acc")]
        history = [(h["epoch"], h["val_acc"]) for h in by_id[r.data.tags["kdsearch.trial_id"]]["history"]]
        assert [e for e, _ in sorted(logged)] == [e for e, _ in history], (logged, r.data.tags)
        assert [v for _, v in sorted(logged)] == pytest.approx([v for _, v in history], abs=1e-4)
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_the_killed_trial_went_on_from_its_checkpoint_as_if_never_stopped(resumed):
    results = resumed[0]
    report = json.loads((results / "tiny" / "report.json").read_text())
    # the KD arm had finished before the kill: read back on resume, none of its trials ran again
    assert not any(t["restarts"] for t in report["trials"] if t["arm"] == "kd")
    # Tune's last snapshot before the kill holds the checkpoint of an epoch before its last (1 mostly; 2 when the
    # kill, at the trial's line, comes late on a busy machine): it went on from there, neither from scratch nor
    # done (and perhaps again after the Ctrl-C)
    killed = [t for t in report["trials"] if t["arm"] == "ce" and t["restarts"]]
    assert killed, [t["restarts"] for t in report["trials"]]
    for t in killed:
        assert 1 <= t["restarts"][0] < t["epochs_run"] and t["state"] == "completed", t
        assert [h["epoch"] for h in t["history"]] == list(range(1, t["epochs_run"] + 1))
    # each arm's first trial is its baseline's stored run: the same numbers, not a second training of it
    rows = {r["model"]: r for r in report["rows"]}
    for arm, baseline in (("kd", "kd_reference"), ("ce", "student_ce")):
        first = next(t for t in report["trials"] if t["arm"] == arm and t["number"] == 0)
        assert first["reused"] == baseline and first["val_acc"] == rows[baseline]["val_acc"]
        assert [(h["val_acc"], h["train_loss"]) for h in first["history"]] == [
            (h["val_acc"], h["train_loss"]) for h in rows[baseline]["history"]]


def test_resume_with_nothing_to_resume_and_a_second_search_while_one_runs(resumed, tiny_archive, tmp_path):
    results = resumed[0]
    study = tmp_path / "tiny.yaml"
    study.write_text(STUDY)
    start = time.time()
    done = kdsearch("search", study, "--data", tiny_archive, "--results", results, "--resume")
    assert done.returncode == 2 and "nothing to resume, the search 'tiny' finished" in done.stderr, done.stderr
    none = kdsearch("search", study, "--data", tiny_archive, "--results", results, "--resume", "--name", "new")
    assert none.returncode == 2 and "'new' has not started" in none.stderr, none.stderr
    assert not (results / "new").exists()
    import fcntl
    (results / "busy").mkdir()
    with open(results / "busy" / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running search holds it
        busy = kdsearch("search", study, "--data", tiny_archive, "--results", results, "--name", "busy")
    assert busy.returncode == 2 and "a search named 'busy' is already running" in busy.stderr, busy.stderr
    assert time.time() - start < 60  # three refusals, each before Ray or MLflow starts


def test_every_torch_load_is_weights_only():
    import ast

    import kdsearch
    calls = []
    for path in Path(kdsearch.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls.append((path.name, {k.arg: ast.unparse(k.value) for k in node.keywords}))
    assert len(calls) >= 3  # the cache, a teacher checkpoint, a trial checkpoint
    assert all(kw.get("weights_only") == "True" for _, kw in calls), calls


def test_epochs_trained_again_after_a_restart_are_logged_once(tmp_path):
    """A trial restored from an older checkpoint (after a kill, or a retry) reports some epochs again: its MLflow
    run keeps one point per epoch, in the same process (a retry) and in a new one (a resume)."""
    from kdsearch.tracking.tracker import Tracker
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = Tracker(uri, "restarts", tmp_path / "artifacts")
    before.start_parent("s", "id0", __file__, {}, [])
    before.start_trial("t0", "trial_t0", {"alpha": 0.5})
    for epoch in (1, 2, 3):
        before.log_epoch("t0", epoch, {"val_acc": 10.0 * epoch, "train_loss": 1.0, "wall": time.time()})
    before.start_trial("t0", "trial_t0", {"alpha": 0.5})  # retried from its epoch-2 checkpoint
    before.log_epoch("t0", 3, {"val_acc": 30.0, "train_loss": 1.0, "wall": time.time()})
    after = Tracker(uri, "restarts", tmp_path / "artifacts")  # resumed: a new process, the run found by its tag
    after.start_parent("s", "id0", __file__, {}, [])
    after.start_trial("t0", "trial_t0", {"alpha": 0.5})  # from its epoch-1 checkpoint this time
    for epoch in (2, 3, 4):
        after.log_epoch("t0", epoch, {"val_acc": 10.0 * epoch, "train_loss": 1.0, "wall": time.time()})
    history = after.client.get_metric_history(after.children["t0"], "val_acc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(e, 10.0 * e) for e in (1, 2, 3, 4)]


def test_a_search_that_failed_before_any_trial_starts_afresh_without_resume(tmp_path):
    """Its engine phase failed (a teacher that diverged, say): nothing of the search itself finished, and what the
    engine phase finished is in the store, so a new try needs no --resume. One that failed later still does."""
    from kdsearch.search.state import SearchState
    state, logs = SearchState(tmp_path / "s"), []
    state.folder.mkdir()
    state.write(status="failed", search_id="a", study={"name": "s"}, command="search s.yaml")
    assert state.begin({"name": "s", "seed": 1}, False, logs.append) is None
    assert logs == ["search: 's' failed before any of its trials ran; starting it afresh (its stored runs are "
                    "reused)"]
    state.write(status="failed", stage="the search")
    with pytest.raises(Exception, match="did not finish \\(failed\\); fix: add --resume"):
        state.begin({"name": "s"}, False, logs.append)
