"""The champion's rules (tracking/registry.py) on a real MLflow store (sqlite): a new version per search; the alias
moves to one at least as good on validation as the current champion, and never to a student at chance. The
searches' own tests register students at chance (the tiny study's); here the reports are made to order."""
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from kdsearch.tracking.registry import register


def report(name, val_acc, at_chance=False):
    checks = [{"kind": "student_at_chance", "model": "kd_best", "stops": False, "line": "at chance"}] if at_chance \
        else []
    return {"name": name, "study": "s", "confirmation": {}, "confirmed": False, "checks": checks,
            "rows": [{"model": "kd_best", "val_acc": val_acc, "test_acc": val_acc}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store with one logged model per search to register (a tiny linear network)."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("s", artifact_location=str(tmp / "artifacts"))
    searches = []
    for i in range(4):
        run = client.create_run(exp)
        with mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="kd_best", pip_requirements=["torch"],
                                            input_example=torch.zeros(1, 2).numpy())
        searches.append((run.info.run_id, info.model_uri))
    return client, searches


def test_the_champion_moves_to_a_student_at_least_as_good_and_never_to_one_at_chance(store):
    client, searches = store
    (p1, m1), (p2, m2), (p3, m3), (p4, m4) = searches
    at_chance = register(client, p1, "s-student", m1, report("a", 11.0, at_chance=True))
    assert at_chance == {"model": "s-student", "version": 1, "aliases": []}  # registered, not champion
    assert client.get_registered_model("s-student").aliases == {}
    assert register(client, p2, "s-student", m2, report("b", 50.0))["aliases"] == ["champion"]
    assert register(client, p3, "s-student", m3, report("c", 49.0))["aliases"] == []  # worse: stays with 2
    assert register(client, p4, "s-student", m4, report("d", 50.0))["aliases"] == ["champion"]  # as good
    assert int(client.get_model_version_by_alias("s-student", "champion").version) == 4
    again = register(client, p4, "s-student", m4, report("d", 50.0))  # a resumed search finds its version
    assert again == {"model": "s-student", "version": 4, "aliases": ["champion"]}
    assert sorted(int(v.version) for v in client.search_model_versions("name='s-student'")) == [1, 2, 3, 4]
