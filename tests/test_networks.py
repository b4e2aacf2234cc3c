"""Distil your own networks: a study names its teacher and student (torchvision, a file of the user's, ...), on
images of any size and channel count. Real images (the shared archive's, made grayscale at 24x24 here), real Ray,
Optuna and MLflow."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import kdsearch, stored

from kdsearch.core.errors import UserError
from kdsearch.data.dataset import load_arrays
from kdsearch.engine.models import build_model, count_params
from kdsearch.engine.networks import logits_of
from kdsearch.phase.context import open_study, resolve_networks
from kdsearch.study.schema import load_study

# a student of the user's, returning (logits, features) as many research models do; it notes where each process
# imported it from (ORIGINS is filled in by the test), so that the test sees how the file reached Ray's workers
NET_FILE = """\
import torch.nn as nn

ORIGINS = {origins!r}


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        if ORIGINS:
            with open(ORIGINS, "a") as f:
                f.write(__file__ + "\\n")
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        f = self.features(x)
        return self.head(f), f
"""

STUDY = """\
name: own
seed: 0
threads: 2
models:
  teacher: {teacher}
  student: {student}
data:
  val_size: 100
augment:
  flip: false
teacher: {{epochs: 1, batch_size: 64, lr: 0.05}}
baselines:
  student_mse: {{epochs: 1, batch_size: 64}}
  student_ce: {{epochs: 1, batch_size: 64}}
  kd_reference: {{epochs: 1, batch_size: 64}}
space:
  temperature: {{type: loguniform, low: 1, high: 20}}
  alpha: {{type: uniform, low: 0, high: 1}}
  epochs: {{type: int, low: 1, high: 2}}
search: {{num_samples: 2, max_concurrent: 2, control: false, stop_at_chance: false}}
resources: {{cpu: 1}}
confirm: {{seeds: 1}}
"""



@pytest.fixture(scope="module")
def gray(tiny_files, tmp_path_factory):
    """The tiny CIFAR-10 subset as a folder of 24x24 grayscale PNGs (an image-folder dataset of another size)."""
    from PIL import Image
    root = tmp_path_factory.mktemp("gray") / "gray24"
    for name, blob in tiny_files.items():
        out = root / Path(name).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(io.BytesIO(blob)).convert("L").resize((24, 24), Image.Resampling.BICUBIC).save(out)
    return root


def own_study(folder, teacher="torchvision:mobilenet_v3_small", origins="", student="tiny_net.py:Net"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_net.py").write_text(NET_FILE.format(origins=str(origins)))
    (folder / "own.yaml").write_text(STUDY.format(teacher=teacher, student=student))
    return folder / "own.yaml"


def test_a_search_distils_a_pretrained_torchvision_teacher_into_a_file_and_a_torchvision_student_on_gray_24px(
        gray, tmp_path, monkeypatch):
    """The teacher starts from torchvision's named weights (a seeded 1000-class state_dict placed in the hub cache,
    where torchvision looks) and is fine-tuned; two students start from init files of the user's: a file network
    stating its own normalisation, and a torchvision network stating none (fed the teacher's)."""
    import torchvision
    from kdsearch.engine.pretrained import hub_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = hub_file("MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    weights.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=1000).state_dict(), weights)
    origins = tmp_path / "origins.txt"
    study = own_study(tmp_path / "study", teacher='{spec: "torchvision:mobilenet_v3_small", weights: DEFAULT}',
                      origins=origins, student="[{spec: tiny_net.py:Net, init: start.pt, mean: [0.5, 0.5, 0.5], "
                                               "std: [0.25, 0.25, 0.25]}, {spec: \"torchvision:mobilenet_v3_small\", "
                                               "init: mobile.pt}]")
    import importlib.util
    spec = importlib.util.spec_from_file_location("own_tiny_net", study.parent / "tiny_net.py")
    tiny_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_net)
    torch.save(tiny_net.Net(10).state_dict(), study.parent / "start.pt")
    torch.manual_seed(1)
    mobile = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()
    torch.save(mobile, study.parent / "mobile.pt")
    r = kdsearch("search", study, "--data", gray, "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (f"{study}: models.teacher: starts from MobileNet_V3_Small_Weights.IMAGENET1K_V1 (" in r.stderr
            and "classifier.3.weight, classifier.3.bias built fresh for the study's 10 classes)" in r.stderr)
    assert f"{study}: models.student[0]: starts from {study.parent / 'start.pt'} (11 of 11 tensors loaded)" in r.stderr
    n = len(mobile)
    assert f"{study}: models.student[1]: starts from {study.parent / 'mobile.pt'} ({n} of {n} tensors loaded)" \
        in r.stderr
    # each is fed its own normalisation: the teacher its weights', the file student the one its entry states, the
    # torchvision student (its init file states none) the teacher's, and a line says so
    assert (f"{study}: the teacher's weights expect mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) and the "
            f"student's mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25): each is fed its own") in r.stderr
    assert f"{study}: models.student.init states no normalisation, so it is fed mean (0.485, 0.456, 0.406)" \
        in r.stderr
    folder = tmp_path / "results" / "own"
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    for label, norm in (("tiny_net_py_Net", {"mean": [0.5] * 3, "std": [0.25] * 3}),
                        ("torchvision_mobilenet_v3_small", imagenet)):
        saved = torch.load(folder / "students" / label / "student.pt", weights_only=True)
        assert [*saved["mean"], *saved["std"]] == pytest.approx([*norm["mean"], *norm["std"]])  # exported with it
    student_params = count_params(tiny_net.Net(10))
    teacher_params = count_params(torchvision.models.get_model("mobilenet_v3_small", num_classes=10))
    report = json.loads((folder / "students" / "tiny_net_py_Net" / "report.json").read_text())
    # what fine-tuning gave: the teacher's (and each baseline's) accuracy before and after, in the report
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows["teacher"]["start"]) == {"val_acc", "test_acc"} and rows["student_ce"]["start"] is not None
    t = rows["teacher"]
    md = (folder / "students" / "tiny_net_py_Net" / "report.md").read_text()
    assert (f"teacher: trained from its starting weights: val {t['start']['val_acc']:.2f}% -> {t['val_acc']:.2f}%, "
            f"test {t['start']['test_acc']:.2f}% -> {t['test_acc']:.2f}%") in md
    assert report["networks"] == {"teacher": {"model": "torchvision:mobilenet_v3_small", "params": teacher_params,
                                              **imagenet},
                                  "student": {"model": "tiny_net.py:Net", "params": student_params,
                                              "mean": [0.5] * 3, "std": [0.25] * 3},
                                  "image_size": [24, 24], "classes": 10, "notebook": False}
    assert {r["model"]: r["params"] for r in report["rows"]} == {
        "teacher": teacher_params, **{m: student_params for m in ("student_mse", "student_ce", "kd_reference",
                                                                  "kd_best")}}
    top = json.loads((folder / "report.json").read_text())
    assert all(t["state"] == "completed" for t in top["trials"]) and len(top["trials"]) == 4
    assert {e["spec"]: e["params"] for e in top["students"]} == {"tiny_net.py:Net": student_params,
                                                                 "torchvision:mobilenet_v3_small": teacher_params}
    assert (f"networks: teacher = torchvision:mobilenet_v3_small ({teacher_params:,} params), student = "
            f"tiny_net.py:Net ({student_params:,} params); 24x24 images, 10 classes\n"
            f"each network fed its own normalisation: teacher mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); "
            f"student mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25)") in md
    assert "notebook" not in md  # the notebook's table compares with its own networks on CIFAR-10 only
    assert "notebook" not in r.stdout
    from mlflow.tracking import MlflowClient
    client = MlflowClient(top["mlflow"]["tracking_uri"])
    parent = client.get_run(top["mlflow"]["parent_run_id"])
    assert parent.data.params["teacher_model"] == "torchvision:mobilenet_v3_small"
    assert parent.data.params["student_model"] == "tiny_net.py:Net"  # the first student's
    assert parent.data.params["student_params"] == str(student_params)
    assert {"own.yaml", "tiny_net.py"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the trials imported the file from Ray's runtime environment (py_modules), not from the study's folder
    seen = origins.read_text().split()
    assert str(study.parent / "tiny_net.py") in seen  # the driver: the checks, the baselines
    assert any("py_modules_files" in p for p in seen), seen  # the trials' processes


def test_a_file_student_is_reused_until_its_file_changes_and_the_notebook_teacher_follows_the_size(gray, tmp_path):
    study = own_study(tmp_path / "study", teacher="teacher")
    args = ("baselines", study, "--data", gray, "--results", tmp_path / "results")
    first = kdsearch(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = {r["model"]: r for r in json.loads((tmp_path / "results" / "own" / "baselines.json").read_text())}
    assert rows["teacher"]["params"] == count_params(build_model("teacher", 10, (24, 24)))  # Linear(256*3*3, .)
    assert "notebook" not in first.stdout.splitlines()[0]
    cache = tmp_path / "results" / "cache"
    before = stored(cache)
    assert kdsearch(*args, cwd=tmp_path).returncode == 0
    assert stored(cache) == before  # nothing trained again
    with open(study.parent / "tiny_net.py", "a") as f:
        f.write("# edited\n")
    edited = kdsearch(*args, cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr[-3000:]
    after = stored(cache)
    assert {k: v for k, v in after.items() if k in before} == before  # the teacher and its logits reused
    new = sorted(k for k in after if k not in before)
    assert len(new) == 6 and all(k.startswith("runs/") for k in new), new  # the 3 students again (.pt, .json)


BAD_NET = {
    "import": "import not_a_module_xyz\n",
    "raises": "def Net(num_classes):\n    raise ValueError('boom')\n",
    "nothing": "X = 1\n",
    "random": "X = 1\n",
    "not_module": "def Net(num_classes):\n    return 3\n",
    "head": "import torch.nn as nn\n\ndef Net(num_classes):\n    return nn.Sequential(nn.Flatten(), nn.LazyLinear(1000))\n",
    "size": "import torch.nn as nn\n\ndef Net(num_classes):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, "
            "num_classes))\n",
    "dict": "import torch.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n        super()."
            "__init__()\n        self.fc = nn.Linear(3, num_classes)\n\n    def forward(self, x):\n        return "
            "{'out': self.fc(x.mean((2, 3)))}\n",
}
MISTAKES = [  # (role, spec, the file's kind from BAD_NET, what the line says)
    ("student", "resnet18", None, "models.student: 'resnet18' is not a network; fix: give one of teacher, student, "
                                  "torchvision:NAME"),
    ("teacher", "torchvision:resnet_nope", None, "models.teacher: torchvision has no classification model "
                                                 "'resnet_nope'; fix:"),
    ("student", "nofile.py:Net", None, "nofile.py does not exist; fix: give the path of a .py file"),
    ("student", "bad.py:Net", "import", "models.student: importing bad.py raised ModuleNotFoundError: No module "
                                        "named 'not_a_module_xyz'; fix: install what it imports, or correct bad.py"),
    ("student", "bad.py:Net", "raises", "raised ValueError: boom; fix: make bad.py:Net build a network"),
    ("student", "bad.py:Net", "nothing", "models.student: bad.py has no callable 'Net'; fix: define "
                                         "Net(num_classes) in it"),
    ("student", "random.py:Net", "random", "random.py is named like a standard-library module ('random')"),
    ("student", "nets/tiny_net:Net", None, "'nets/tiny_net' in 'nets/tiny_net:Net' is neither a .py file nor a "
                                           "module name"),
    ("student", "no_such_pkg.models:Net", None, "no module 'no_such_pkg.models' can be imported here; fix: install"),
    ("teacher", "torchvision:fasterrcnn_resnet50_fpn", None, "torchvision has no classification model "
                                                             "'fasterrcnn_resnet50_fpn'"),
    ("student", "bad.py:Net", "not_module", "models.student: bad.py:Net returned a int, not a torch.nn.Module"),
    ("teacher", "bad.py:Net", "head", "models.teacher: bad.py:Net gives logits of shape (2, 1000) for 2 images, not "
                                      "(2, 10) for the data's 10 classes; fix: build its head with num_classes"),
    ("student", "bad.py:Net", "size", "models.student: bad.py:Net fails on a batch of 2 images of 3x24x24 ("
                                      "RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    ("student", "bad.py:Net", "dict", "fails on a batch of 2 images of 3x24x24 (TypeError: the network returned a "
                                      "dict, not logits"),
]
import importlib.util  # noqa: E402

if importlib.util.find_spec("timm") is None:
    MISTAKES.append(("student", "timm:resnet18", None, "timm is not installed; fix: pip install timm"))


@pytest.mark.parametrize("role,spec,kind,message", MISTAKES, ids=[f"{m[1]}-{m[2]}" for m in MISTAKES])
def test_each_network_mistake_is_one_line_before_anything_is_written(role, spec, kind, message, gray, tmp_path):
    study = own_study(tmp_path / "study")
    text = study.read_text().replace(f"  {role}: ", f"  {role}: {spec}  # ", 1)
    study.write_text(text)
    if kind:
        (study.parent / ("random.py" if kind == "random" else "bad.py")).write_text(BAD_NET[kind])
    r = kdsearch("search", study, "--data", gray, "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stderr.startswith(f"kdsearch: error: {study}: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "results").exists()  # no cache, no MLflow store, no search record, no Ray


def test_a_teacher_checkpoint_that_does_not_fit_the_teacher_is_one_line(gray, tmp_path):
    study = own_study(tmp_path / "study", teacher="torchvision:resnet18")
    torch.save(build_model("teacher", 10).state_dict(), tmp_path / "notebook_teacher.pt")
    study.write_text(study.read_text().replace("teacher: {epochs: 1,", f"teacher: {{checkpoint: "
                                                                       f"{tmp_path / 'notebook_teacher.pt'}, epochs: 1,"))
    r = kdsearch("search", study, "--data", gray, "--results", tmp_path / "results", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "notebook_teacher.pt does not fit torchvision:resnet18 with 10 classes: " in r.stderr
    assert "key(s) missing: conv1.weight, bn1.weight, bn1.bias and " in r.stderr, r.stderr
    assert not (tmp_path / "results").exists()


def test_outputs_other_than_a_tensor_follow_one_rule():
    t = torch.zeros(2, 3)
    assert logits_of(t) is t and logits_of((t, "aux")) is t and logits_of([t]) is t
    assert logits_of({"logits": t, "hidden": 1}) is t

    class Output:  # as Hugging Face's model outputs
        logits = t
    assert logits_of(Output()) is t
    for bad in ({"out": t}, ("x",), (), 3):
        with pytest.raises(TypeError, match="not logits"):
            logits_of(bad)


@pytest.mark.parametrize("size", [(24, 24), (40, 28), (8, 8)])
def test_the_notebook_networks_are_built_for_the_image_size(size):
    x = torch.zeros(2, 3, *size)
    for name in ("teacher", "student"):
        assert build_model(name, 7, size).eval()(x).shape == (2, 7)
    # at 32x32 they are the notebook's, parameter for parameter, so its state_dicts load
    assert count_params(build_model("teacher", 10)) == 3_251_018
    assert count_params(build_model("student", 10)) == 545_098


def test_images_of_mixed_sizes_and_modes_become_rgb_of_one_size(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i, (mode, size) in enumerate([("L", 20), ("RGBA", 24), ("P", 20), ("RGB", 24)] * 2):
        for split in ("train", "test"):
            im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)
            out = tmp_path / "d" / split / f"c{i % 2}" / f"{i}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            im.save(out)
    with pytest.raises(UserError, match=r"but the others are .*fix: set data.image_size in the study file"):
        load_arrays("auto", tmp_path / "d")
    a = load_arrays("auto", tmp_path / "d", image_size=16)
    assert a.train_x.shape == (8, 16, 16, 3) and a.train_x.dtype == np.uint8
    gray = a.train_x[[0, 2]]  # class c0 holds 0.png, 2.png, 4.png, 6.png: 0 and 4 are the L images
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()  # grey as RGB
    colour = a.train_x[4:]  # class c1: RGBA and RGB images, whose channels differ
    assert not (colour[..., 0] == colour[..., 1]).all()


def test_normalisation_is_the_training_splits_own_unless_the_study_gives_it(gray, tmp_path):
    study_file = own_study(tmp_path / "s", teacher="teacher")
    study = load_study(study_file, {"data.path": str(gray)})
    ctx = open_study(study, study_file, tmp_path / "r", torch.device("cpu"), lambda m: None)
    x = ctx.data.train.x.permute(0, 2, 3, 1).reshape(-1, 3).double() / 255
    assert ctx.views.mean == pytest.approx(tuple(x.mean(0).tolist()), abs=1e-6)
    assert ctx.views.std == pytest.approx(tuple(x.std(0, unbiased=False).tolist()), abs=1e-6)
    assert ctx.views.padding == 3 and ctx.views.flip is False  # 24 // 8, and the study's augment.flip
    assert len(list((tmp_path / "r" / "cache" / "stats").glob("*.pt"))) == 1  # computed once, stored
    given = load_study(study_file, {"data.path": str(gray), "data.mean": [0.5, 0.5, 0.5], "data.std": [0.25] * 3,
                                    "augment.crop_padding": 2})
    ctx = open_study(given, study_file, tmp_path / "r", torch.device("cpu"), lambda m: None)
    assert (ctx.views.mean, ctx.views.std, ctx.views.padding) == ((0.5,) * 3, (0.25,) * 3, 2)


def described(study_file):
    """The study as a search's record holds it, its networks resolved as a search resolves them."""
    from kdsearch.search.pipeline import describe
    study = load_study(study_file)
    return describe(study, resolve_networks(study, study_file))


def test_resume_refuses_once_a_network_file_was_edited(tmp_path):
    from kdsearch.search.state import SearchState
    study_file = own_study(tmp_path / "s", teacher="teacher")
    state = SearchState(tmp_path / "r" / "own")
    state.folder.mkdir(parents=True)
    state.write(status="interrupted", stage="the search", study=described(study_file),
                command="search own.yaml")
    assert state.begin(described(study_file), True, print)["status"] == "interrupted"
    with open(study_file.parent / "tiny_net.py", "a") as f:
        f.write("# edited\n")
    with pytest.raises(UserError, match="the study differs from the interrupted search's at networks.student; fix"):
        state.begin(described(study_file), True, print)
