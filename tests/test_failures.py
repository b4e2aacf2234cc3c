"""Bad trials end alone: one whose loss turns NaN stops at once as diverged, one that raises is retried and then
failed with its error's first line; the search goes on. Real Ray, Optuna and MLflow, kdsearch's own Tuner. The
space also searches the loss family (kd or dist, dist with its own gamma): a conditional space end to end."""
import dataclasses
import urllib.request

import numpy as np
import pytest
import torch

from kdsearch.phase.context import open_study
from kdsearch.search.cluster import start_ray, stop_ray
from kdsearch.search.pipeline import trial_data
from kdsearch.search.searcher import make_searcher
from kdsearch.search.tune_callback import trial_callback
from kdsearch.search.tuner import TuneJob, build_tuner, collect_trials
from kdsearch.study.running import Resources
from kdsearch.study.schema import Data, Param, Recipe, Search, Study
from kdsearch.tracking.tracker import open_tracker


@pytest.fixture(scope="module")
def searched(tiny_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failures")
    logs = []
    ctx = open_study(Study(name="failures", threads=2, data=Data(path=str(tiny_archive), val_size=100)),
                     tmp / "failures.yaml", tmp, torch.device("cpu"), logs.append)
    # a logit table for 1 epoch: a 2-epoch trial raises at its start (the KD loss needs a view per epoch)
    table = np.random.default_rng(0).normal(size=(1, len(ctx.data.train), 10)).astype(np.float32)
    table = torch.from_numpy(table)
    space = {"loss": Param("choice", values=["kd", "dist"]), "lr": Param("choice", values=[0.001, 1e9]),
             "epochs": Param("choice", values=[1, 2]), "gamma": Param("uniform", 0.5, 2.0, losses=["dist"])}
    search = Search(num_samples=6, max_concurrent=2, seed=1, max_failures=1)  # seeded: every case below occurs
    tracker = open_tracker(f"sqlite:///{tmp / 'mlflow.db'}", "failures", tmp / "artifacts")
    tracker.start_parent("failures", "id0", __file__, {}, [])
    resources = Resources(cpu=1, gpu=0)
    job = TuneJob(trial_data(ctx, lambda mix: table, resources, "cpu"), "kd",
                  dataclasses.asdict(Recipe(batch_size=64)), None, resources, tmp, 2)
    url = start_ray(None, logs.append)
    try:
        import ray

        # the dashboard opens as is (no token: no 401) and the node stays on loopback
        dashboard = (url, urllib.request.urlopen(url + "/api/cluster_status", timeout=30).status,
                     ray.nodes()[0]["NodeManagerAddress"])
        # the trials' data is one object whose arrays Ray shares zero-copy: read-only views of the object store
        shared = ray.get(ray.put(job.data))
        zero_copy = [not a.flags.writeable for a in (shared.train_x, shared.val_x, *shared.logits.values())]
        tuner = build_tuner(job, make_searcher(space, search.seed), search,
                            [trial_callback(tracker, list(space), logs.append)])
        trials = [t.to_json() for t in collect_trials(tuner.fit(), list(space))]
    finally:
        stop_ray()
    return trials, tracker, logs, dashboard, zero_copy


def test_the_local_ray_serves_its_dashboard_on_loopback_without_a_token(searched):
    url, status, node = searched[3]
    assert url.startswith("http://127.0.0.1:") and status == 200 and node == "127.0.0.1", searched[3]


def test_the_trials_data_reaches_ray_as_one_object_with_its_arrays_zero_copy(searched):
    assert searched[4] == [True, True, True]


def test_a_trial_whose_loss_turns_nan_is_diverged_and_the_search_goes_on(searched):
    trials, tracker = searched[:2]
    assert len(trials) == 6
    states = {(t["params"]["lr"], t["params"]["epochs"]): t["state"] for t in trials}
    assert states.get((1e9, 1)) == "diverged" and states.get((0.001, 1)) == "completed", states
    diverged = next(t for t in trials if t["state"] == "diverged")
    assert diverged["history"][-1]["train_loss"] is None  # NaN, stopped in its first epoch
    run = tracker.client.get_run(tracker.children[diverged["trial_id"]])
    assert run.info.status == "FAILED" and run.data.tags["kdsearch.state"] == "diverged"


def test_a_trial_of_each_loss_carries_only_the_values_its_loss_takes(searched):
    trials, tracker = searched[:2]
    assert {t["params"]["loss"] for t in trials} == {"kd", "dist"}
    for t in trials:
        assert ("gamma" in t["params"]) == (t["params"]["loss"] == "dist"), t["params"]
    done = next(t for t in trials if t["state"] == "completed")
    logged = tracker.client.get_run(tracker.children[done["trial_id"]]).data.params
    assert set(logged) == set(done["params"]), logged  # nor does MLflow show a value the loss ignores


def test_a_trial_that_raises_is_retried_then_failed_with_its_first_line(searched):
    trials, tracker = searched[:2]
    failed = [t for t in trials if t["params"]["epochs"] == 2]
    assert failed and all(t["state"] == "failed" for t in failed)
    error = "ValueError: the {} loss needs teacher logits for every epoch's views"
    lines = {error.format(t['params']['loss']) for t in failed}
    assert all(t["error"] == error.format(t['params']['loss'])
               for t in failed), [t["error"] for t in failed]
    runs = tracker.client.search_runs([tracker.experiment_id], "tags.`kdsearch.state` = 'failed'")
    assert len(runs) == len(failed) and all(r.data.tags["kdsearch.error"] in lines for r in runs)
    assert all(r.data.tags["kdsearch.failures"] == "2" for r in runs)  # retried once (max_failures 1), then failed
    assert all(r.info.status == "FAILED" for r in runs)
