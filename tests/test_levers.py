"""The training levers of a recipe (levers.py): AdamW and SGD with Nesterov, warm-up, cosine and one-cycle
schedules, an EMA of the weights, label smoothing, gradient clipping. On real images (the tiny subset)."""
import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from kdsearch.core.errors import UserError
from kdsearch.data.augment import Views
from kdsearch.data.dataset import Split, load_arrays, prepare
from kdsearch.engine.levers import lr_factor, make_optimizer
from kdsearch.engine.loop import Lesson, new_model, train
from kdsearch.engine.losses import make_loss
from kdsearch.engine.networks import notebook_networks
from kdsearch.study.schema import Recipe, key_fields
from kdsearch.study.space import first_point

NETS, CPU = notebook_networks(), torch.device("cpu")


@pytest.fixture(scope="module")
def lesson(tiny_archive):
    data = prepare(load_arrays("auto", tiny_archive), 100, None, 0, CPU)
    return Lesson(Split(data.train.x[:64], data.train.y[:64]), Views(0), Split(data.val.x[:32], data.val.y[:32]))


def run(recipe, lesson, epochs=None, resume=None, seed=0):
    """(model, history, the state after each epoch) of a CE run of the student; each state copied, as a
    checkpoint is (a state's tensors are the live weights)."""
    recipe = dataclasses.replace(recipe, loss="ce", epochs=epochs or recipe.epochs)
    model, states = new_model(NETS, "student", seed, CPU), []
    history = train(model, recipe, lesson, seed=seed, resume=resume,
                    report=lambda m, state: states.append(copy.deepcopy(state())))
    return model, history, states


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# each lever, and the same recipe with that lever at its neutral value (or the other optimizer)
LEVERS = [
    ({"optimizer": "adamw", "weight_decay": 0.05}, {"optimizer": "adam", "weight_decay": 0.05}),
    ({"optimizer": "sgd", "nesterov": True, "lr": 0.05}, {"optimizer": "sgd", "nesterov": False, "lr": 0.05}),
    ({"schedule": "onecycle"}, {}),
    ({"schedule": "cosine", "warmup_epochs": 1}, {"schedule": "cosine"}),
    ({"ema": 0.9}, {}),
    ({"label_smoothing": 0.1}, {}),
    ({"grad_clip": 0.5}, {}),
]


@pytest.mark.parametrize("fields,neutral", LEVERS)
def test_each_lever_trains_and_changes_the_run(fields, neutral, lesson):
    """A run with the lever trains, repeats exactly for the same seed, and ends with other weights than the same
    run without it: a lever that were ignored would give the neutral run's weights."""
    recipe = Recipe(epochs=3, batch_size=32, **fields)
    model, history, _ = run(recipe, lesson)
    assert len(history) == 3 and all(math.isfinite(h["train_loss"]) and h["val_acc"] is not None for h in history)
    again, _, _ = run(recipe, lesson)
    assert same_weights(weights(model), weights(again))  # deterministic: a difference below is the lever's
    plain, plain_history, _ = run(Recipe(epochs=3, batch_size=32, **neutral), lesson)
    assert not same_weights(weights(model), weights(plain)), fields
    losses, plain_losses = [h["train_loss"] for h in history], [h["train_loss"] for h in plain_history]
    if "ema" in fields:  # the average trains nothing: the running weights step as without it, the kept model differs
        assert losses == plain_losses
    else:
        assert losses != plain_losses, fields


def test_the_optimizers_are_the_ones_named():
    model = new_model(NETS, "student", 0, CPU)
    sgd = make_optimizer(model, Recipe(optimizer="sgd", nesterov=True, lr=0.1))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adamw = make_optimizer(model, Recipe(optimizer="adamw", weight_decay=0.01))
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("schedule,warmup,expected", [
    ("none", 0, [1.0] * 5),
    ("none", 2, [1 / 3, 2 / 3, 1.0, 1.0, 1.0]),
    ("cosine", 0, [0.5 * (1 + math.cos(math.pi * e / 5)) for e in range(5)]),
    ("cosine", 1, [0.5] + [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]),
    # onecycle: 30 % of 5 epochs (2) rising from 1/25, then a cosine down towards 1/25/1e4
    ("onecycle", 0, [0.04, 0.52] + [4e-6 + (1 - 4e-6) * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]),
])
def test_a_schedule_gives_its_learning_rate_every_epoch(schedule, warmup, expected, lesson):
    recipe = Recipe(lr=0.01, epochs=5, batch_size=64, schedule=schedule, warmup_epochs=warmup)
    assert [lr_factor(recipe, e) for e in range(5)] == pytest.approx(expected)
    _, history, _ = run(recipe, lesson)
    assert [h["lr"] for h in history] == pytest.approx([0.01 * f for f in expected])  # what each epoch trained at


def test_the_ema_is_the_hand_computed_average_of_the_weights(lesson):
    """One step per epoch (a batch of all 64 images), so each epoch's running weights are each step's."""
    decay = 0.5
    model, history, states = run(Recipe(epochs=4, batch_size=64, ema=decay), lesson)
    raw = [s.raw for s in states]
    avg = {k: v.clone().float() for k, v in raw[0].items()}  # the first update copies
    for n, step in enumerate(raw[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        avg = {k: avg[k] + (step[k].float() - avg[k]) * (1 - d) for k in avg}
    for k, v in model.state_dict().items():  # the model ends as the average, and the checkpoint's model is it
        torch.testing.assert_close(v.float(), avg[k], msg=k)
        torch.testing.assert_close(states[-1].model[k], v, msg=k)
    assert not all(torch.equal(raw[-1][k], v) for k, v in model.state_dict().items())  # not the running weights


def test_a_resumed_run_keeps_its_ema_and_schedule(lesson):
    recipe = Recipe(epochs=4, batch_size=32, ema=0.9, schedule="onecycle", optimizer="sgd", nesterov=True, lr=0.05)
    whole, history, states = run(recipe, lesson)
    resumed, again, _ = run(recipe, lesson, resume=states[1])  # from its state after epoch 2, as a checkpoint
    assert [h["lr"] for h in again] == pytest.approx([h["lr"] for h in history])
    assert [h["val_acc"] for h in again] == [h["val_acc"] for h in history]
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_label_smoothing_smooths_the_hard_term_only():
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss, parts = make_loss(Recipe(loss="ce", label_smoothing=0.2))(logits, labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels, label_smoothing=0.2))
    t = torch.randn(8, 10)
    kd = make_loss(Recipe(loss="kd", label_smoothing=0.2))(logits, labels, t)[1]
    plain = make_loss(Recipe(loss="kd"))(logits, labels, t)[1]
    assert kd["soft"] == plain["soft"] and kd["hard"] != plain["hard"]
    with pytest.raises(Exception, match="the mse loss has no CE term to smooth"):
        Recipe(loss="mse", label_smoothing=0.1)


def test_neutral_levers_keep_a_recipes_cache_key_and_others_change_it():
    base = key_fields(Recipe())
    assert key_fields(Recipe(nesterov=False, warmup_epochs=0, ema=None, label_smoothing=0.0, grad_clip=None)) == base
    for fields in ({"ema": 0.999}, {"label_smoothing": 0.1}, {"grad_clip": 1.0}, {"warmup_epochs": 2},
                   {"optimizer": "sgd", "nesterov": True}, {"schedule": "onecycle"}):
        assert key_fields(Recipe(**fields)) != base, fields


def test_the_levers_can_be_searched_and_the_first_trial_is_kd_reference(tmp_path):
    from kdsearch.study.schema import load_study
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nspace:\n  optimizer: {type: choice, values: [adam, adamw, sgd]}\n"
                     "  ema: {type: choice, values: [null, 0.999, 0.9999]}\n"
                     "  schedule: {type: choice, values: [none, cosine, onecycle]}\n"
                     "  label_smoothing: {type: uniform, low: 0, high: 0.2}\n"
                     "  warmup_epochs: {type: int, low: 0, high: 5}\n")
    s = load_study(study)
    point = first_point(s.space, s.baselines.kd_reference, print)
    assert point == {"optimizer": "adam", "ema": None, "schedule": "none", "label_smoothing": 0.0,
                     "warmup_epochs": 0}
    study.write_text("name: s\nspace:\n  ema: {type: choice, values: [1.5]}\n")
    with pytest.raises(UserError, match="space.ema.values: must be < 1"):
        load_study(study)


def test_the_control_arm_searches_the_recipe_values_or_says_why_there_is_none(tmp_path):
    """The CE arm's space is the study's less the distillation values (a value some losses took is searched for
    every CE trial); a space of distillation values alone leaves it nothing, and a line says so; control: false
    turns it off without a word."""
    from kdsearch.study.schema import load_study
    from kdsearch.study.space import study_arms

    def _study_file(text):
        path = tmp_path / "s.yaml"
        path.write_text("name: s\n" + text)
        return path

    both = load_study(_study_file("space:\n  loss: {type: choice, values: [kd, dkd]}\n"
                                  "  beta: {type: uniform, low: 1, high: 8}\n  temperature: {type: uniform, low: 1, high: 8}\n"
                                  "  lr: {type: loguniform, low: 0.0001, high: 0.01}\n  ema: {type: choice, values: [null, 0.9]}\n"))
    logs = []
    kd, ce = study_arms(both, logs.append)
    assert (kd.name, kd.baseline, ce.name, ce.baseline) == ("kd", "kd_reference", "ce", "student_ce") and logs == []
    assert list(ce.space) == ["lr", "ema"] and all(p.losses is None for p in ce.space.values())
    assert ce.base.loss == "ce" and first_point(ce.space, ce.base, print) == {"lr": 0.001, "ema": None}
    only_kd = load_study(_study_file("space:\n  temperature: {type: uniform, low: 1, high: 8}\n"
                                     "  alpha: {type: uniform, low: 0, high: 1}\n"))
    assert [a.name for a in study_arms(only_kd, logs.append)] == ["kd"]
    assert logs == ["search: the space searches only distillation values (temperature, alpha), so the CE control arm "
                    "has nothing to search; kd_best is compared with the fixed student_ce only (add a recipe value "
                    "such as lr or epochs to the space to search a CE student too)"]
    off = load_study(_study_file("search:\n  control: false\n"))
    assert [a.name for a in study_arms(off, logs.append)] == ["kd"] and len(logs) == 1
