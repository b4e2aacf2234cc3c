"""Where a network's weights start (engine/pretrained.py): torchvision's named weights from torch's hub cache (a
state_dict placed where torchvision looks, as the test can without a network), a user's init file, the head rule,
the cache keys, the normalisation they expect, and a wrong or missing file in one line."""
import subprocess
import sys

import pytest
import torch
import torchvision

from kdsearch.core.errors import UserError
from kdsearch.engine.networks import resolve, resolve_entry
from kdsearch.engine.pretrained import hub_file
from kdsearch.study.inputs import NetworkEntry

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def flat(norm):
    return [v for channels in norm for v in channels]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """TORCH_HOME in a temporary folder holding resnet18's IMAGENET1K_V1 file: a seeded 1000-class resnet18's
    state_dict (what torchvision loads from there without downloading); returns that state_dict."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(1)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    path = hub_file("ResNet18_Weights.IMAGENET1K_V1")
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def entry(spec, **kw):
    return NetworkEntry(spec, **kw)


def test_named_weights_load_every_tensor_but_a_head_of_another_class_count(hub, tmp_path):
    net = resolve_entry(entry("torchvision:resnet18", weights="DEFAULT"), tmp_path, "s.yaml: models.teacher")
    assert net.weights == "ResNet18_Weights.IMAGENET1K_V1"  # DEFAULT resolved: the key names what was loaded
    model = net.architecture(10, (32, 32))
    fresh = net.start(model, 10)
    assert fresh == ["fc.weight", "fc.bias"]
    built = model.state_dict()
    for k, v in built.items():  # weight by weight: every tensor is the file's, the head is the constructor's
        if k in fresh:
            assert v.shape[0] == 10 and hub[k].shape[0] == 1000
        else:
            assert torch.equal(v, hub[k]), k
    # the same class count as the weights': nothing fresh, everything loaded
    whole = net.architecture(1000, (32, 32))
    assert net.start(whole, 1000) == [] and all(torch.equal(v, hub[k]) for k, v in whole.state_dict().items())
    assert flat(net.expected_norm()) == pytest.approx(flat(IMAGENET))


def test_an_init_file_starts_the_network_and_its_hash_is_in_the_key(tmp_path):
    torch.manual_seed(2)
    saved = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()
    torch.save(saved, tmp_path / "start.pt")
    plain = resolve("torchvision:mobilenet_v3_small", tmp_path, "w")
    net = resolve_entry(entry("torchvision:mobilenet_v3_small", init="start.pt"), tmp_path, "w")
    assert net.init == str(tmp_path / "start.pt") and net.key.startswith(plain.key + "+init=")
    assert resolve_entry(entry("torchvision:mobilenet_v3_small"), tmp_path, "w").key == plain.key  # unchanged
    model = net.build(10, (32, 32))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert net.expected_norm() is None  # an init file states no normalisation unless the entry gives it
    stated = resolve_entry(entry("torchvision:mobilenet_v3_small", init="start.pt", mean=[0.5] * 3, std=[0.2] * 3),
                           tmp_path, "w")
    assert stated.expected_norm() == ((0.5,) * 3, (0.2,) * 3) and stated.key == net.key
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=10).state_dict(), tmp_path / "start.pt")
    with pytest.raises(UserError, match=r"start.pt changed since the study started; fix: restore it"):
        net.build(10, (32, 32))
    assert resolve_entry(entry("torchvision:mobilenet_v3_small", init="start.pt"), tmp_path, "w").key != net.key


@pytest.mark.parametrize("kw,message", [
    ({"init": "nowhere.pt"}, "w.init: {tmp}/nowhere.pt does not exist; fix: give the path of a state_dict"),
    ({"weights": "IMAGENET9K"}, "w.weights: resnet18 has no weights 'IMAGENET9K'; fix: name one of IMAGENET1K_V1, "
                                "DEFAULT"),
    ({"weights": "DEFAULT", "init": "x.pt"}, "w: weights and init both say where the weights start"),
    ({"mean": [0.5] * 3}, "w: mean and std go together; fix: give both, or neither"),
])
def test_a_bad_entry_is_one_line(tmp_path, kw, message):
    with pytest.raises(UserError) as e:
        resolve_entry(entry("torchvision:resnet18", **kw), tmp_path, "w")
    assert message.format(tmp=tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_a_file_of_another_architecture_is_one_line(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pt")
    net = resolve_entry(entry("torchvision:mobilenet_v3_small", init="r18.pt"), tmp_path, "s.yaml: models.student")
    with pytest.raises(UserError) as e:  # as the networks' check before anything runs says it
        net.start(net.architecture(10, (32, 32)), 10, "s.yaml: models.student")
    text = str(e.value)
    assert text.startswith(f"s.yaml: models.student.init: {tmp_path / 'r18.pt'} does not fit the network: ")
    assert "key(s) missing: features.0.0.weight" in text and "key(s) unexpected: conv1.weight" in text
    assert text.endswith("fix: give weights of this very architecture") and "\n" not in text
    # a tensor of another shape that is no class head (here a conv's channels) is no head either
    state = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()
    state["features.0.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "narrow.pt")
    narrow = resolve_entry(entry("torchvision:mobilenet_v3_small", init="narrow.pt"), tmp_path, "w")
    with pytest.raises(UserError, match=r"1 key\(s\) of another shape: features.0.0.weight \(8, 3, 3, 3\) "
                                        r"\(not \(16, 3, 3, 3\)\)"):
        narrow.build(10, (32, 32))


STUDY = """\
name: pre
models:
  teacher: {{spec: "torchvision:resnet18", weights: IMAGENET1K_V1}}
  student: {student}
data: {{val_size: 100}}
"""


def test_missing_weights_are_one_line_naming_the_file_and_nothing_is_written(tiny_archive, tmp_path):
    """Without the file in the hub cache and without a network (here: a proxy on a closed loopback port, so that
    nothing leaves this machine), the search stops before writing anything and names the file to place."""
    (tmp_path / "pre.yaml").write_text(STUDY.format(student="student"))
    env = {"PATH": "/usr/bin:/bin", "TORCH_HOME": str(tmp_path / "torch"), "HOME": str(tmp_path),
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-m", "kdsearch", "search", "pre.yaml", "--data", str(tiny_archive),
                        "--results", "results"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    path = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"pre.yaml: models.teacher.weights: {path} is not there and cannot be downloaded (" in r.stderr
    assert "fix: place the file https://download.pytorch.org/models/resnet18-f37072fd.pth there" in r.stderr
    assert not (tmp_path / "results").exists()


def test_normalisation_follows_the_weights_and_a_file_without_one_is_said(hub, tiny_archive, tmp_path):
    from kdsearch.phase.context import open_study
    from kdsearch.study.schema import load_study
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=10).state_dict(), tmp_path / "start.pt")
    study_file = tmp_path / "pre.yaml"
    study_file.write_text(STUDY.format(student='{spec: "torchvision:mobilenet_v3_small", init: start.pt}'))
    said = []
    ctx = open_study(load_study(study_file, {"data.path": str(tiny_archive)}), study_file, tmp_path / "r",
                     torch.device("cpu"), said.append)
    assert flat((ctx.views.mean, ctx.views.std)) == pytest.approx(flat(IMAGENET))  # the teacher's weights', fed to both
    assert any(line.startswith(f"{study_file}: models.teacher: starts from ResNet18_Weights.IMAGENET1K_V1 (120 of "
                               f"122 tensors loaded; fc.weight, fc.bias built fresh for the study's 10 classes)")
               for line in said), said
    assert f"{study_file}: models.student.init states no normalisation, so it is fed mean (0.485, 0.456, 0.406)" \
           in "\n".join(said)
    assert ctx.teacher_views is None and ctx.fed("teacher") == ctx.views  # one normalisation: one set of views
    # the two networks' weights expect different normalisations: each is fed its own, and that is said
    study_file.write_text(STUDY.format(student='{spec: "torchvision:mobilenet_v3_small", init: start.pt, '
                                               'mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}'))
    ctx = open_study(load_study(study_file, {"data.path": str(tiny_archive)}), study_file, tmp_path / "r",
                     torch.device("cpu"), said.append)
    assert (ctx.views.mean, ctx.views.std) == ((0.5,) * 3, (0.5,) * 3)
    assert flat((ctx.fed("teacher").mean, ctx.fed("teacher").std)) == pytest.approx(flat(IMAGENET))
    assert ctx.views_of("cutmix", role="teacher").mix == ctx.views_of("cutmix").mix  # the same views but their numbers
    assert any("the teacher's weights expect mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) and the "
               "student's mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5): each is fed its own" in line for line in said)
    # the teacher's logit table holds the teacher's logits of each view normalised its own way
    from kdsearch.data.augment import augmented_views
    from kdsearch.engine.loop import new_model
    from kdsearch.phase.teacher import logit_table
    teacher = new_model(ctx.networks, "teacher", 0, torch.device("cpu")).eval()
    table, idx = logit_table(ctx, teacher, "t", 1).float(), torch.arange(16)
    with torch.no_grad():
        own = teacher(augmented_views(ctx.data.train.x, idx, ctx.fed("teacher"), 0))
        student_way = teacher(augmented_views(ctx.data.train.x, idx, ctx.views, 0))
    torch.testing.assert_close(table[0, idx], own, rtol=2e-3, atol=2e-3)  # float16's rounding
    assert (table[0, idx] - student_way).abs().max() > 0.05
    # data.mean and data.std feed both the same
    given = load_study(study_file, {"data.path": str(tiny_archive), "data.mean": [0.4] * 3, "data.std": [0.3] * 3})
    ctx = open_study(given, study_file, tmp_path / "r", torch.device("cpu"), said.append)
    assert (ctx.views.mean, ctx.views.std) == ((0.4,) * 3, (0.3,) * 3) and ctx.teacher_views is None


def test_an_init_file_of_another_architecture_stops_the_command_in_one_line_writing_nothing(tiny_archive, tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pt")
    (tmp_path / "pre.yaml").write_text("name: pre\nmodels:\n  student: {spec: \"torchvision:mobilenet_v3_small\", "
                                       "init: r18.pt}\ndata: {val_size: 100}\n")
    r = subprocess.run([sys.executable, "-m", "kdsearch", "baselines", "pre.yaml", "--data", str(tiny_archive),
                        "--results", "results"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"kdsearch: error: pre.yaml: models.student.init: {tmp_path / 'r18.pt'} does not fit "
                               f"the network: ") and "fix: give weights of this very architecture" in r.stderr
    assert not (tmp_path / "results").exists()
