import dataclasses

import pytest
import torch

from kdsearch.core.errors import UserError
from kdsearch.data.augment import Views, augmented_views
from kdsearch.data.dataset import Split, load_arrays, prepare
from kdsearch.engine.loop import Lesson, new_model, train, train_step
from kdsearch.engine.losses import make_loss
from kdsearch.engine.networks import notebook_networks
from kdsearch.engine.precision import TABLE_DTYPE
from kdsearch.phase.context import StudyContext
from kdsearch.phase.store import Store
from kdsearch.phase.teacher import get_teacher, load_teacher_checkpoint, logit_table
from kdsearch.study.schema import Recipe, Study, load_study

NETS = notebook_networks()


def context(data, store, study=None, seed=0, log=lambda m: None):
    """A study's context around `data`: `study` (default: a bare study with `seed`), `store`, the CPU, the
    notebook's networks and views."""
    study = study or Study(name="t", seed=seed)
    return StudyContext(study, data, store, Views(study.seed), NETS, log)


@pytest.fixture(scope="module")
def data(tiny_archive):
    return prepare(load_arrays("auto", tiny_archive), 100, None, 0, torch.device("cpu"))


def test_kd_step_on_cached_logits_equals_the_step_with_the_teacher_online(data, tmp_path):
    torch.manual_seed(1)
    teacher = new_model(NETS, "teacher", 1, torch.device("cpu")).eval()
    table = logit_table(context(data, Store(tmp_path), seed=5), teacher, "t", 2)
    assert table.shape == (2, len(data.train), 10) and table.dtype == TABLE_DTYPE
    recipe = Recipe(loss="kd", temperature=4.0, alpha=0.5)
    idx = torch.randperm(len(data.train))[:64]
    x, y = augmented_views(data.train.x, idx, Views(5), 1), data.train.y[idx]
    students = []
    for online in (False, True):
        student = new_model(NETS, "student", 0, torch.device("cpu"))
        opt = torch.optim.Adam(student.parameters(), lr=1e-2)
        if online:
            with torch.no_grad():  # the table stores the teacher's logits rounded to float16
                t = teacher(x).to(TABLE_DTYPE)
        else:
            t = table[1, idx]
        loss, _ = train_step(student, opt, make_loss(recipe), x, y, t)
        students.append((student, loss))
    (a, loss_a), (b, loss_b) = students
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    # and the table really is the teacher on those views: another epoch's views give other logits
    assert not torch.allclose(table[0, idx], table[1, idx])


def test_teacher_is_trained_once_and_retrained_when_its_recipe_changes(data, tiny_study, tmp_path):
    study = load_study(tiny_study)
    store, logs = Store(tmp_path / "cache"), []
    t1, run1 = get_teacher(context(data, store, study, log=logs.append))
    assert not run1.cached and any("training teacher" in m for m in logs)
    logs.clear()
    t2, run2 = get_teacher(context(data, store, study, log=logs.append))
    assert run2.cached and run2.key == run1.key and not any("training" in m for m in logs)
    for p, q in zip(t1.state_dict().values(), t2.state_dict().values()):
        assert torch.equal(p, q)
    logs.clear()
    changed = dataclasses.replace(study, teacher=dataclasses.replace(study.teacher, lr=0.05))
    _, run3 = get_teacher(context(data, store, changed, log=logs.append))
    assert run3.key != run1.key and not run3.cached and any("training teacher" in m for m in logs)


def test_a_teacher_checkpoint_is_used_as_given(data, tiny_study, tmp_path):
    model = new_model(NETS, "teacher", 3, torch.device("cpu"))
    torch.save(model.state_dict(), tmp_path / "t.pt")
    study = load_study(tiny_study, {"teacher.checkpoint": str(tmp_path / "t.pt")})
    logs = []
    loaded, run = get_teacher(context(data, Store(tmp_path / "c"), study, log=logs.append))
    assert not any("training" in m for m in logs) and run.train_s == 0
    for p, q in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(p, q)


def test_checkpoints_that_do_not_fit_get_a_clear_error(tmp_path):
    cpu = torch.device("cpu")
    torch.save(new_model(NETS, "student", 0, cpu).state_dict(), tmp_path / "student.pt")
    with pytest.raises(UserError, match=r"student.pt does not fit teacher with 10 classes: 51 key\(s\) missing: "
                                        r"block1.0.weight, block1.0.bias, block1.1.weight and 48 more; 8 key\(s\) "
                                        r"unexpected: conv1.weight, .*; fix: give a state_dict of teacher"):
        load_teacher_checkpoint(tmp_path / "student.pt", NETS, cpu)
    torch.save(new_model(notebook_networks(num_classes=100), "teacher", 0, cpu).state_dict(), tmp_path / "t100.pt")
    with pytest.raises(UserError, match=r"2 key\(s\) of another shape: classifier.4.weight \(100, 512\) \(not "
                                        r"\(10, 512\)\), classifier.4.bias"):
        load_teacher_checkpoint(tmp_path / "t100.pt", NETS, cpu)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match=r"junk.pt cannot be read"):
        load_teacher_checkpoint(tmp_path / "junk.pt", NETS, cpu)
    torch.save({"epoch": 3}, tmp_path / "dict.pt")
    with pytest.raises(UserError, match=r"dict.pt is not a state_dict of tensors"):
        load_teacher_checkpoint(tmp_path / "dict.pt", NETS, cpu)
    with pytest.raises(UserError, match=r"missing.pt does not exist"):
        load_teacher_checkpoint(tmp_path / "missing.pt", NETS, cpu)


def test_training_pairs_each_epochs_views_with_that_epochs_logits(data, tmp_path):
    """engine.train on the table equals KD with the teacher run online on each epoch's views (the notebook's way).
    One batch per epoch, so that the reference needs no batch order: any order gives the same step, up to float
    rounding (SGD: Adam would blow the rounding of near-zero gradients up to whole steps)."""
    cpu = torch.device("cpu")
    small = Split(data.train.x[:128], data.train.y[:128])
    teacher = new_model(NETS, "teacher", 1, cpu).eval()
    with torch.no_grad():  # an untrained teacher's logits hardly vary between views: make them, so pairing shows
        teacher.classifier[-1].weight.mul_(100)
    table = logit_table(context(type(data)(small, data.val, data.test, data.classes, "small"), Store(tmp_path),
                                seed=7), teacher, "t", 2)
    recipe = Recipe(loss="kd", alpha=0.0, epochs=2, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9)
    cached = new_model(NETS, "student", 0, cpu)
    train(cached, recipe, Lesson(small, Views(7), teacher_logits=table), seed=3)

    online = new_model(NETS, "student", 0, cpu)
    opt, loss_fn = torch.optim.SGD(online.parameters(), lr=0.05, momentum=0.9), make_loss(recipe)
    every = torch.arange(128)
    for epoch in range(2):
        online.train()
        x = augmented_views(small.x, every, Views(7), epoch)
        with torch.no_grad():
            t = teacher(x).to(TABLE_DTYPE)
        train_step(online, opt, loss_fn, x, small.y, t)
    for (name, p), q in zip(cached.named_parameters(), online.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    # and that tolerance would catch a wrong pairing: the table's epochs swapped give another student
    swapped = new_model(NETS, "student", 0, cpu)
    train(swapped, recipe, Lesson(small, Views(7), teacher_logits=table.flip(0)), seed=3)
    gap = max((p - q).abs().max().item() for p, q in zip(swapped.parameters(), cached.parameters()))
    assert gap > 2e-5, gap


def test_runs_stored_with_the_old_row_keys_load_with_the_new_ones(tmp_path):
    """A cache written before rows said model/config (name/recipe) is still used, not retrained."""
    store = Store(tmp_path)
    model = new_model(NETS, "student", 0, torch.device("cpu"))
    store.save_run("runs", "k", model, {"name": "student_ce", "key": "k", "params": 1, "val_acc": 1.0,
                                        "test_acc": 2.0, "train_s": 3.0, "history": [], "recipe": {"loss": "ce"}})
    run = store.load_run("runs", "k").run
    assert run.model == "student_ce" and run.config == {"loss": "ce"} and run.cached


def test_a_damaged_cache_entry_is_named_and_recomputed(data, tmp_path):
    logs = []
    store = Store(tmp_path, logs.append)
    model = new_model(NETS, "student", 0, torch.device("cpu"))
    store.save_run("runs", "k", model, {"model": "student_ce", "key": "k", "params": 1, "val_acc": 1.0,
                                        "test_acc": 2.0, "train_s": 3.0, "history": [], "config": {}})
    assert store.load_run("runs", "k").run.val_acc == 1.0  # sound, until damaged
    pt = tmp_path / "runs" / "k.pt"
    pt.write_bytes(pt.read_bytes()[:1000])  # a run truncated by a full disk or a copy cut short
    assert store.load_run("runs", "k") is None
    assert logs[0].startswith(f"cache: {pt} is damaged (") and logs[0].endswith("recomputing it"), logs
    assert not pt.exists()  # dropped, so the next run stores a sound one
    teacher = new_model(NETS, "teacher", 1, torch.device("cpu")).eval()
    table = logit_table(context(data, store, seed=5, log=logs.append), teacher, "t", 1)
    (table_file,) = (tmp_path / "logits").glob("*.pt")
    table_file.write_bytes(table_file.read_bytes()[:-100])
    again = logit_table(context(data, store, seed=5, log=logs.append), teacher, "t", 1)
    assert torch.equal(again, table) and any(f"cache: {table_file} is damaged" in m for m in logs), logs


def test_a_table_serves_a_shorter_one_and_is_extended_for_a_longer_one(data, tmp_path):
    """`kdsearch train` computes the rows its recipe reads; a search's longer table then adds only the rows
    missing, and every table equals one computed whole (a row depends on seed, epoch and image alone)."""
    teacher = new_model(NETS, "teacher", 1, torch.device("cpu")).eval()
    logs = []
    ctx = context(data, Store(tmp_path / "a"), seed=5, log=logs.append)
    two = logit_table(ctx, teacher, "t", 2)
    four = logit_table(ctx, teacher, "t", 4)  # two rows computed, after the two stored
    three = logit_table(ctx, teacher, "t", 3)  # served by the four: nothing computed
    computed = [m for m in logs if m.startswith("teacher logits: ")]
    assert [m.split(" views")[0] for m in computed] == [f"teacher logits: 2 epochs x {len(data.train)}"] * 2
    assert computed[1].endswith("after the 2 stored")
    whole = logit_table(context(data, Store(tmp_path / "b"), seed=5), teacher, "t", 4)
    assert torch.equal(four, whole) and torch.equal(two, whole[:2]) and torch.equal(three, whole[:3])
