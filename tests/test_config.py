"""The study schema (pydantic): its JSON Schema for editors, parse_recipe, and the loss registry's facts in it."""
import dataclasses
import json
import os

import jsonschema
import pytest
import torch
import yaml

from kdsearch.core.errors import UserError
from kdsearch.engine import losses
from kdsearch.study.schema import (
    NEUTRAL,
    SEARCHABLE,
    Baselines,
    Param,
    Recipe,
    Teacher,
    json_schema,
    key_fields,
    load_study,
    parse_recipe,
)

ROOT = os.path.join(os.path.dirname(__file__), "..", "search_spaces")
SHIPPED = ["cifar10_quick.yaml", "cifar10_kd.yaml"]


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_study_files_are_valid_by_the_json_schema(validator, name):
    with open(os.path.join(ROOT, name)) as f:
        validator.validate(yaml.safe_load(f))


@pytest.mark.parametrize("text,where", [
    ("name: x\nteacher:\n  lrr: 0.1\n", ["teacher"]),  # an unknown key
    ("name: x\ntypo: 1\n", []),
    ("name: x\nteacher:\n  lr: -0.1\n", ["teacher", "lr"]),  # a bound
    ("name: x\nbaselines:\n  kd_reference:\n    alpha: 1.5\n", ["baselines", "kd_reference", "alpha"]),
    ("name: x\nconfirm:\n  seeds: 0\n", ["confirm", "seeds"]),
    ("name: x\nbaselines:\n  student_ce:\n    loss: hinge\n", ["baselines", "student_ce", "loss"]),  # a choice
    ("name: x\nteacher:\n  loss: kd\n", ["teacher", "loss"]),
    ("name: x\nspace:\n  model: {type: choice, values: [teacher]}\n", ["space"]),  # not searchable
    ("name: x\nspace:\n  lr: {type: gaussian, low: 0.1, high: 1}\n", ["space", "lr", "type"]),
    ("name: x\ndata:\n  val_size: 2.5\n", ["data", "val_size"]),  # an int field
    ("name: a/b\n", ["name"]),
    ("seed: 1\n", []),  # name is required
])
def test_bad_studies_fail_the_json_schema_too(validator, tmp_path, text, where):
    errors = list(validator.iter_errors(yaml.safe_load(text)))
    assert errors and list(errors[0].absolute_path) == where, [(list(e.absolute_path), e.message) for e in errors]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError):  # and the loader refuses them
        load_study(path)


def test_the_json_schema_carries_types_bounds_choices_and_defaults():
    schema = json_schema()
    top, defs = schema["properties"], schema["$defs"]
    assert {"name", "seed", "device", "data", "teacher", "baselines", "space", "search"} <= set(top)
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert top["space"]["propertyNames"]["enum"] == list(SEARCHABLE)
    recipe, teacher = defs["Recipe"]["properties"], defs["Teacher"]["properties"]
    assert recipe["lr"] == {**recipe["lr"], "type": "number", "exclusiveMinimum": 0, "default": 1e-3}
    assert recipe["alpha"]["minimum"] == 0 and recipe["alpha"]["maximum"] == 1
    assert recipe["epochs"]["type"] == "integer" and recipe["loss"]["enum"] == sorted(losses.LOSSES)
    assert teacher["loss"]["enum"] == ["ce", "mse"] and teacher["lr"]["default"] == 0.1
    assert teacher["epochs"]["default"] == 50 and "checkpoint" in teacher
    assert all(d.get("additionalProperties") is False for d in defs.values())
    json.dumps(schema)  # plain JSON, as `kdsearch schema` prints it


def test_parse_recipe_gives_a_recipe_by_the_study_files_rules():
    r = parse_recipe({"loss": "dkd", "beta": 2, "lr": "1e-3", "epochs": 5}, "--set")
    assert r == Recipe(loss="dkd", beta=2.0, lr=1e-3, epochs=5) and isinstance(r.lr, float)
    assert parse_recipe({}, "--set") == Recipe()
    assert parse_recipe({"loss": "dist", "beta": 0.5, "gamma": 2}, "--set").gamma == 2.0


@pytest.mark.parametrize("fields,message", [
    ({"loss": "kd", "beta": 2}, "--set: beta: the kd loss takes no beta (only dkd and dist); fix: remove beta"),
    ({"loss": "dkd", "gamma": 1}, "--set: gamma: the dkd loss takes no gamma (only dist)"),
    ({"beta": 1}, "--set: beta: the kd loss takes no beta"),  # the default loss is kd
    ({"loss": "hinge"}, "--set: loss: must be one of ce, dist, dkd, kd, kd_ls, mse (got 'hinge')"),
    ({"lr": 0}, "--set: lr: must be > 0 (got 0.0)"),
    ({"epochs": 2.5}, "--set: epochs: must be an int (got 2.5)"),
    ({"epochs": True}, "--set: epochs: must be an int (got True)"),
    ({"alpha": True}, "--set: alpha: must be a number (got True)"),
    ({"beta": "x", "loss": "dkd"}, "--set: beta: must be null or a number (got 'x')"),
    ({"temprature": 2}, "--set: temprature: unknown key; fix: use one of model, loss,"),
    (["loss=kd"], "--set: top level: must be a mapping"),
])
def test_parse_recipe_refuses_in_one_line_naming_where_and_the_key(fields, message):
    with pytest.raises(UserError) as e:
        parse_recipe(fields, "--set")
    assert message in str(e.value) and "fix:" in str(e.value) and "\n" not in str(e.value)


def test_yaml_quirks_and_partial_sections(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nteacher: {lr: 1e-3, epochs: 8}\nbaselines:\n  student_mse: {epochs: 10}\n"
                    "resources: {cpu: 2}\n")
    study = load_study(path)
    assert study.teacher.lr == 1e-3 and study.teacher.optimizer == "sgd"  # YAML 1.1's string "1e-3"; the rest kept
    assert study.baselines.student_mse == dataclasses.replace(Baselines().student_mse, epochs=10)
    assert study.baselines.student_mse.loss == "mse" and study.baselines.student_mse.lr == 1e-4
    assert study.resources.cpu == 2.0 and isinstance(study.resources.cpu, float)
    assert isinstance(study.teacher, Teacher) and study.teacher == dataclasses.replace(Teacher(), lr=1e-3, epochs=8)
    json.dumps(dataclasses.asdict(study))  # search.json stores it


def test_the_dataclass_api_callers_use():
    p = Param("uniform", 0, 1)
    assert (p.low, p.high, p.values) == (0, 1, None) and Param("choice", values=[1, 2]).values == [1, 2]
    r = Recipe(**dataclasses.asdict(Recipe(loss="dist", beta=2.0)))
    assert dataclasses.replace(r, lr=0.5).lr == 0.5 and vars(r)["beta"] == 2.0
    assert key_fields(Recipe()) == {k: v for k, v in dataclasses.asdict(Recipe()).items()
                                    if k not in ("beta", "gamma", *NEUTRAL)}  # as before the levers existed
    assert key_fields(r)["beta"] == 2.0 and "gamma" not in key_fields(r)


def test_the_registry_holds_each_losss_facts():
    assert losses.losses_taking("beta") == ("dkd", "dist") and losses.losses_taking("gamma") == ("dist",)
    assert losses.OPTIONAL_VALUES == ("beta", "gamma")
    assert losses.NEEDS_TEACHER == {"kd", "kd_ls", "dkd", "dist"}
    assert losses.LOSSES["dkd"].takes == {"beta": 8.0} and losses.LOSSES["dist"].takes == {"beta": 1.0, "gamma": 1.0}
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    for loss, given in (("dkd", {"beta": 8.0}), ("dist", {"beta": 1.0, "gamma": 1.0})):  # null: the default
        assert torch.equal(losses.make_loss(Recipe(loss=loss))(s, y, t)[0],
                           losses.make_loss(Recipe(loss=loss, **given))(s, y, t)[0])


@pytest.mark.parametrize("value", ["beta", "gamma"])
def test_which_losses_take_beta_and_gamma_comes_from_the_registry(value, monkeypatch, tmp_path):
    accepted = set()
    for loss in losses.LOSSES:
        try:
            parse_recipe({"loss": loss, value: 1.0}, "--set")
            accepted.add(loss)
        except UserError:
            pass
    assert accepted == set(losses.losses_taking(value))
    # the space's conditions too: a searched value is kept to the losses that take it
    path = tmp_path / "s.yaml"
    path.write_text(f"name: x\nspace:\n  loss: {{type: choice, values: [kd, dkd, dist]}}\n"
                    f"  {value}: {{type: uniform, low: 0.5, high: 2}}\n")
    assert load_study(path).space[value].losses == [n for n in ("kd", "dkd", "dist") if n in accepted]
    # take it away in the registry, and the rules follow
    monkeypatch.setitem(losses.LOSSES, "dist", dataclasses.replace(losses.LOSSES["dist"], takes={}))
    with pytest.raises(UserError, match=f"the dist loss takes no {value}"):
        parse_recipe({"loss": "dist", value: 1.0}, "--set")
    if value == "gamma":
        with pytest.raises(UserError, match="none of space.loss.values takes gamma"):
            load_study(path)


def test_the_distillation_losses_come_from_the_registry(tmp_path):
    """A searched loss is one of the losses that read the teacher; the teacher's own loss is one that does not."""
    searchable, teacher = set(), set()
    for i, loss in enumerate(losses.LOSSES):
        for text, ok in ((f"space:\n  loss: {{type: choice, values: [{loss}]}}\n", searchable),
                         (f"teacher: {{loss: {loss}}}\n", teacher)):
            path = tmp_path / f"{i}.yaml"
            path.write_text("name: x\n" + text)
            try:
                load_study(path)
                ok.add(loss)
            except UserError:
                pass
    assert searchable == losses.NEEDS_TEACHER and teacher == set(losses.LOSSES) - losses.NEEDS_TEACHER
