"""What no other test covered: the cifar10 data source (torchvision's CIFAR-10 python folder), data.train_subset,
a `package.module:CALLABLE` network, `kdsearch schema` as a command, gradient clipping, and a confirmation run
that fails in a real local Ray. On real images (the tiny subset) wherever a network or a split sees them."""
import dataclasses
import hashlib
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsearch.core.errors import UserError
from kdsearch.data.augment import Views, training_batch
from kdsearch.data.dataset import CIFAR10_CLASSES, load_arrays, prepare, resolve_source
from kdsearch.engine.levers import make_optimizer
from kdsearch.engine.loop import Lesson, new_model, train, train_step
from kdsearch.engine.losses import make_loss
from kdsearch.engine.networks import notebook_networks, resolve
from kdsearch.study.schema import Recipe

NETS, CPU = notebook_networks(), torch.device("cpu")
PER_BATCH = 10  # images per batch file of the CIFAR-10 folder below: one of each class


@pytest.fixture(scope="module")
def data(tiny_archive):
    return prepare(load_arrays("auto", tiny_archive), 100, None, 0, CPU)


# ---- the cifar10 source ----

def cifar10_folder(root, tiny_files):
    """root/cifar-10-batches-py as torchvision's download leaves it (data_batch_1..5, test_batch, batches.meta,
    each a pickled dict with `data` uint8 rows of 3072 values, channel by channel, and `labels`), holding real
    images: the tiny subset's, one of each class per batch. Returns (train images NHWC, train labels, test ...)."""
    from PIL import Image
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    by_class = {c: sorted(k for k in tiny_files if k.startswith(f"train/{c}/")) for c in CIFAR10_CLASSES}
    tests = {c: sorted(k for k in tiny_files if k.startswith(f"test/{c}/")) for c in CIFAR10_CLASSES}
    out = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        names = [(tests if name == "test_batch" else by_class)[c][b % 5] for c in CIFAR10_CLASSES]
        images = np.stack([np.asarray(Image.open(io.BytesIO(tiny_files[n])).convert("RGB")) for n in names])
        labels = list(range(PER_BATCH))
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "filenames": names,
                         "data": images.transpose(0, 3, 1, 2).reshape(PER_BATCH, 3072)}, f)
        out[name] = images, labels
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": PER_BATCH, "num_vis": 3072}, f)
    train = [out[f"data_batch_{i}"] for i in range(1, 6)]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), *out["test_batch"])


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_a_cifar10_folder_that_fails_torchvisions_checksums_is_one_line_and_never_downloaded(tiny_files, tmp_path):
    """A folder with cifar-10-batches-py is the cifar10 source (auto), is not downloaded again (there is no
    network: a download would fail with "could not get CIFAR-10"), and torchvision's md5 check of files that are
    not the published ones (these) is kdsearch's one line naming the folder and the fix."""
    root = tmp_path / "data"
    cifar10_folder(root, tiny_files)
    assert resolve_source("auto", root) == "cifar10"
    with pytest.raises(UserError) as e:
        load_arrays("auto", root, cache_dir=tmp_path / "cache")
    assert str(e.value) == (f"{root / 'cifar-10-batches-py'} is incomplete or corrupt; fix: delete that folder "
                            f"and run again to download CIFAR-10 afresh")
    assert not (tmp_path / "cache").exists()  # nothing cached


def test_a_cifar10_folder_decodes_into_the_images_and_labels_of_its_batches(tiny_files, tmp_path, monkeypatch):
    """The folder decoded through torchvision's CIFAR10, as the cifar10 source reads it: the five training
    batches in order, the test batch, the class names of batches.meta, NHWC uint8; cached, then read back; resized
    when the study asks for another size. torchvision checks each file against the published CIFAR-10's md5, which
    a folder of a few images cannot match: the test gives torchvision these files' md5s instead (the decoding
    itself is torchvision's and kdsearch's, unchanged)."""
    import torchvision
    root = tmp_path / "data"
    train_x, train_y, test_x, test_y = cifar10_folder(root, tiny_files)
    folder, cls = root / "cifar-10-batches-py", torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    arrays = load_arrays("cifar10", root, cache_dir=tmp_path / "cache")
    assert arrays.train_x.dtype == np.uint8 and arrays.train_x.shape == (5 * PER_BATCH, 32, 32, 3)
    assert np.array_equal(arrays.train_x, train_x) and np.array_equal(arrays.train_y, train_y)
    assert np.array_equal(arrays.test_x, test_x) and np.array_equal(arrays.test_y, test_y)
    assert arrays.train_y.dtype == np.int64 and arrays.classes == CIFAR10_CLASSES
    assert arrays.cached and (tmp_path / "cache" / "data" / arrays.key).is_dir()
    again = load_arrays("auto", root, cache_dir=tmp_path / "cache")  # auto: the same source, from the cache
    assert again.cached and again.key == arrays.key and np.array_equal(again.train_x, train_x)
    small = load_arrays("cifar10", root, image_size=16)
    assert small.train_x.shape == (5 * PER_BATCH, 16, 16, 3) and small.key == arrays.key + "-16px"
    # a resize, not a crop: the mean colour of each image stays about the same
    assert np.abs(small.train_x.mean((1, 2)) - train_x.mean((1, 2))).max() < 3


# ---- data.train_subset ----

def test_train_subset_is_a_stratified_seeded_part_of_the_images_left_after_validation(tiny_archive):
    """400 training images (40 a class): the validation split takes 100 (10 a class), a train_subset of 50 takes
    5 a class of the other 300, never a validation image; the same seed takes the same ones, another seed others."""
    arrays = load_arrays("auto", tiny_archive)
    whole = prepare(arrays, 100, None, 0, CPU)
    sub = prepare(arrays, 100, 50, 0, CPU)
    assert len(whole.train) == 300 and len(sub.train) == 50 and len(sub.val) == 100 and len(sub.test) == 100
    assert torch.bincount(sub.train.y, minlength=10).tolist() == [5] * 10
    assert torch.equal(sub.val.x, whole.val.x) and torch.equal(sub.test.x, whole.test.x)  # only training shrinks

    def images(split):
        return {bytes(img.contiguous().numpy()) for img in split.x}
    assert images(sub.train) <= images(whole.train) and not images(sub.train) & images(sub.val)
    assert torch.equal(prepare(arrays, 100, 50, 0, CPU).train.x, sub.train.x)
    assert images(prepare(arrays, 100, 50, 1, CPU).train) != images(sub.train)
    assert sub.key != whole.key and "-s50-" in sub.key  # runs on the subset are other runs
    assert len(prepare(arrays, 100, 1000, 0, CPU).train) == 300  # a subset larger than what is left: all of it


# ---- a network named package.module:CALLABLE ----

NET_MODULE = """\
import torch.nn as nn


def Net(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes{extra}))
"""


def test_a_module_network_resolves_builds_and_is_keyed_by_its_files_content(tmp_path, monkeypatch, data):
    """`package.module:CALLABLE` of a package on sys.path: the module's network, built with the data's class count,
    trains on the images; its key holds the module file's hash, so an edited module is another network."""
    pkg = tmp_path / "gap_nets_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NET_MODULE.format(extra=""))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = resolve("gap_nets_pkg.nets:Net", tmp_path, "models.student")
    assert (net.kind, net.name, net.attr) == ("module", "gap_nets_pkg.nets", "Net")
    model = net.build(7, (32, 32))
    assert isinstance(model, torch.nn.Sequential) and model[0].out_channels == 8 and model[-1].out_features == 7
    x, _ = training_batch(data.train, torch.arange(4), Views(0), 0)
    assert model(x).shape == (4, 7)
    key = net.key
    (pkg / "nets.py").write_text(NET_MODULE.format(extra=", bias=False"))
    edited = resolve("gap_nets_pkg.nets:Net", tmp_path, "models.student")
    assert key.startswith("gap_nets_pkg.nets:Net@") and edited.key != key
    tv = resolve("torchvision.models:resnet18", tmp_path, "models.teacher")  # an installed package's callable
    assert tv.kind == "module" and tv.build(10, (32, 32)).fc.out_features == 10
    with pytest.raises(UserError, match="models.student: no module 'gap_nets_pkg.nowhere' can be imported here"):
        resolve("gap_nets_pkg.nowhere:Net", tmp_path, "models.student")


# ---- kdsearch schema ----

def test_the_schema_command_prints_the_studys_json_schema(tmp_path):
    """`kdsearch schema` prints JSON (for an editor's YAML language server): the study schema's, whose top-level
    properties are the Study's fields, `name` required, with no other output."""
    from kdsearch.study.schema import Study, json_schema
    r = subprocess.run([sys.executable, "-m", "kdsearch", "schema"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    schema = json.loads(r.stdout)
    fields = {f.name for f in dataclasses.fields(Study)}
    assert set(schema["properties"]) == fields >= {"name", "seed", "data", "teacher", "baselines", "space", "search",
                                                   "confirm", "resources"}
    assert schema["required"] == ["name"] and schema == json_schema()


# ---- grad_clip ----

def test_grad_clip_clips_the_gradients_global_norm_and_so_the_step(data):
    """One train_step of plain SGD (no momentum yet on a first step) on a batch of real images: with clip c the
    gradients left are the unclipped ones scaled to norm c, and the weights move by lr * c; without it by the
    whole gradient. A run with a tiny clip trains other weights than one without."""
    x, y = training_batch(data.train, torch.arange(64), Views(0), 0)
    loss_fn, clip, lr = make_loss(Recipe(loss="ce")), 0.05, 0.1
    runs = {}
    for c in (None, clip):
        model = new_model(NETS, "student", 0, CPU)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        train_step(model, make_optimizer(model, Recipe(optimizer="sgd", lr=lr)), loss_fn, x, y, clip=c)
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
        runs[c] = grads, moved
    full, clipped = runs[None][0], runs[clip][0]
    assert full.norm() > 10 * clip  # there was something to clip
    assert clipped.norm() == pytest.approx(clip, rel=1e-4)  # torch scales by clip / (norm + 1e-6)
    torch.testing.assert_close(clipped, full * (clipped.norm() / full.norm()))  # same direction
    assert runs[clip][1].norm() == pytest.approx(lr * clip, rel=1e-3)
    assert runs[None][1].norm() == pytest.approx(lr * full.norm().item(), rel=1e-3)

    lesson = Lesson(data.train, Views(0), data.val)
    weights = {}
    for c in (None, 1e-3):
        model = new_model(NETS, "student", 0, CPU)
        train(model, Recipe(loss="ce", epochs=1, batch_size=64, grad_clip=c), lesson, seed=0)
        weights[c] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert not torch.allclose(weights[None], weights[1e-3])


# ---- a confirmation run that fails ----

def test_a_failing_confirmation_run_is_one_line_and_the_others_go_on(data):
    """The confirmation's runs in a real local Ray, one at a time, the failing ones first: a run that raises (a
    KD run longer than the teacher's logit table) and one that diverges (lr 1e9) each come back as None with one
    line naming the run, its seed and its error's first line; the run after them still trains and comes back."""
    from kdsearch.phase.runs import RunSpec
    from kdsearch.phase.trial import TrialData
    from kdsearch.search.cluster import start_ray, stop_ray
    from kdsearch.search.confirm import Workers, _run
    from kdsearch.study.running import Resources

    def nhwc(split):
        return split.x.permute(0, 2, 3, 1).contiguous().numpy(), split.y.numpy()
    (tx, ty), (vx, vy) = nhwc(data.train), nhwc(data.val)
    table = torch.randn(1, len(data.train), 10, generator=torch.Generator().manual_seed(0)).numpy()
    trial_data = TrialData(tx, ty, vx, vy, {"none": table}, NETS, {"none": Views(0)}, "cpu", 1)
    recipes = {"too_long": Recipe(loss="kd", epochs=2, batch_size=64),
               "diverges": Recipe(loss="kd", epochs=1, batch_size=64, lr=1e9),
               "fine": Recipe(loss="kd", epochs=1, batch_size=64)}
    specs = [RunSpec(name, recipe, 1, name) for name, recipe in recipes.items()]
    logs = []
    start_ray(None, logs.append)
    try:
        results = {spec.name: result for spec, result in _run(specs, Workers(trial_data, Resources(1, 0), 1),
                                                                logs.append)}
    finally:
        stop_ray()
    assert results["too_long"] is None and results["diverges"] is None
    history, state = results["fine"]
    assert len(history) == 1 and history[0]["val_acc"] is not None and "diverged" not in history[0]
    assert set(state) == set(new_model(NETS, "student", 1, CPU).state_dict())  # the student, seed 1
    assert all(v.device.type == "cpu" for v in state.values())
    failed = [line for line in logs if "failed" in line]
    assert failed == ["confirm: too_long seed 1 failed (ValueError: the kd loss needs teacher logits for every "
                      "epoch's views); it leaves the confirmation",
                      "confirm: diverges seed 1 failed (RuntimeError: diverged in epoch 1 (the loss became NaN or "
                      "infinite)); it leaves the confirmation"], logs
    assert sum("fine seed 1: val" in line for line in logs) == 1
