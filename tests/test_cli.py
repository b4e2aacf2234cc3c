import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kdsearch, stored

from kdsearch.core.errors import UserError
from kdsearch.study.schema import load_study
from kdsearch.tools.precision import TEMPERATURES



def test_baselines_end_to_end_then_everything_is_reused(tiny_study, tiny_archive, tmp_path):
    results = tmp_path / "results"
    first = kdsearch("baselines", tiny_study, "--data", tiny_archive, "--results", results, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    table = first.stdout.splitlines()
    assert table[0].split()[:5] == ["model", "params", "val", "acc", "test"]
    rows = {line.split()[0]: line.split() for line in table[2:6]}
    assert list(rows) == ["teacher", "student_mse", "student_ce", "kd_reference"]
    assert rows["teacher"][1] == "3,251,018" and rows["kd_reference"][1] == "545,098"
    saved = json.loads((results / "tiny" / "baselines.json").read_text())
    assert [r["model"] for r in saved] == list(rows)  # one row schema: model, config, ...
    assert saved[3]["config"]["loss"] == "kd" and saved[0]["config"]["model"] == "teacher"
    assert all(0 <= r["val_acc"] <= 100 and 0 <= r["test_acc"] <= 100 for r in saved)
    assert len(saved[3]["history"]) == 2  # kd_reference ran its 2 epochs, with a val_acc and loss terms each
    assert {"val_acc", "train_loss", "loss_hard", "loss_soft"} <= set(saved[3]["history"][-1])
    cache = stored(results / "cache")
    tables = [k for k in cache if k.startswith("logits/") and k.endswith(".pt")]
    assert len(tables) == 1  # the teacher's logits for kd_reference's 2 epochs of views of the 300 images
    assert tuple(torch.load(results / "cache" / tables[0], weights_only=True).shape) == (2, 300, 10)

    second = kdsearch("baselines", tiny_study, "--data", tiny_archive, "--results", results, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert stored(results / "cache") == cache  # nothing trained or computed again
    assert second.stdout.splitlines()[2:6] == [line + "  (stored)" if "(stored)" not in line else line
                                               for line in first.stdout.splitlines()[2:6]]

    # the float16 table's error, measured on the stored teacher and kd_reference: nothing trained for it
    measured = kdsearch("precision", tiny_study, "--data", tiny_archive, "--results", results, "--images", 64,
                        cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    assert stored(results / "cache") == cache and "reusing the stored run" in measured.stderr
    out = json.loads((results / "tiny" / "precision.json").read_text())
    names = [e["name"] for e in out["errors"]]
    assert names[0] == "kd T=1, soft terms alone" and names[-1] == "kd_reference (kd T=4.5 alpha=0.8)"
    assert len(names) == 4 * len(TEMPERATURES) + 1 and out["evidence"]["images"] == 64
    assert all(0 <= e["loss_max"] < 1e-2 and 0 <= e["grad_max"] < 1e-1 for e in out["errors"]), out["errors"]
    assert [line.split()[0] for line in measured.stdout.splitlines()[3:3 + len(names)]] == [n.split()[0] for n in names]


BAD_STUDIES = [
    ("name: x\nteacher:\n  lrr: 0.1\n", "teacher.lrr: unknown key"),
    ("name: x\nteacher:\n  lr: -0.1\n", "teacher.lr: must be > 0 (got -0.1)"),
    ("name: x\nbaselines:\n  kd_reference:\n    alpha: 1.5\n", "baselines.kd_reference.alpha: must be <= 1"),
    ("name: x\nbaselines:\n  kd_reference:\n    temperature: 0\n", "baselines.kd_reference.temperature: must be > 0"),
    ("name: x\nteacher:\n  epochs: 0\n", "teacher.epochs: must be >= 1"),
    ("name: x\nteacher:\n  epochs: ten\n", "teacher.epochs: must be an int"),
    ("name: x\ndata:\n  val_size: true\n", "data.val_size: must be an int"),
    ("name: x\nbaselines:\n  student_ce:\n    loss: hinge\n", "baselines.student_ce.loss: must be one of ce, dist, dkd, kd, kd_ls, mse"),
    ("seed: 1\n", "name: required key is missing"),
    ("name: x\nteacher: [1, 2]\n", "teacher: must be a mapping"),
    ("name: [x\n", "not valid YAML at line"),
    ("- 1\n- 2\n", "must be a mapping of keys"),
    ("name: x\nspace:\n  lr: {type: loguniform, low: 0.01, high: 0.001}\n", "space.lr: low must be < high"),
    ("name: x\nspace:\n  alpha: {type: uniform, low: 0.5, high: 1.5}\n", "space.alpha.high: must be <= 1"),
    ("name: x\nspace:\n  alpha: {type: uniform, low: -0.1, high: 1}\n", "space.alpha.low: must be >= 0"),
    ("name: x\nspace:\n  temperature: {type: uniform, low: 0, high: 5}\n", "space.temperature.low: must be > 0"),
    ("name: x\nspace:\n  lr: {type: uniform, low: -1, high: 0.1}\n", "space.lr.low: must be > 0"),
    ("name: x\nspace:\n  epochs: {type: int, low: 0, high: 5}\n", "space.epochs.low: must be >= 1"),
    ("name: x\nspace:\n  epochs: {type: int, low: 2.5, high: 5}\n", "space.epochs.low: must be an int"),
    ("name: x\nspace:\n  epochs: {type: choice, values: [10, 0]}\n", "space.epochs.values: must be >= 1"),
    ("name: x\nspace:\n  lr: {type: loguniform, high: 0.1}\n", "space.lr.low: required for type loguniform"),
    ("name: x\nspace:\n  lr: {type: gaussian, low: 0.1, high: 1}\n", "space.lr.type: must be one of"),
    ("name: x\nspace:\n  model: {type: choice, values: [teacher]}\n", "space.model: cannot be searched"),
    ("name: x\nspace:\n  lr: {type: uniform, low: 0.1, high: 1, scale: 2}\n", "space.lr.scale: unknown key"),
    ("name: x\nspace: {}\n", "space: must be a mapping of hyperparameters"),
    ("name: x\nsearch:\n  num_samples: 0\n", "search.num_samples: must be >= 1"),
    ("name: x\nsearch:\n  scheduler: hyperband\n", "search.scheduler: must be one of"),
    ("name: x\nsearch:\n  control: maybe\n", "search.control: input should be a valid boolean (got 'maybe'); fix: "
                                            "edit search.control"),
    ("name: x\nsearch:\n  control: 1\n", "search.control: input should be a valid boolean (got 1)"),
    ("name: x\nmodels:\n  student: {spec: student, wieghts: DEFAULT}\n",
     "models.student.wieghts: unknown key; fix: use one of spec, weights, init, mean, std"),
    ("name: x\nmodels:\n  teacher: {spec: teacher, mean: [0.5, 0.5, 0.5], std: [0.2, 0, 0.2]}\n",
     "models.teacher.std: must be > 0 in every channel (got [0.2, 0.0, 0.2])"),
    ("name: x\nconfirm:\n  seeds: 0\n", "confirm.seeds: must be >= 1"),
    ("name: x\nconfirm:\n  top_k: 0\n", "confirm.top_k: must be >= 1"),
    ("name: x\nconfirm:\n  rounds: 2\n", "confirm.rounds: unknown key"),
    ("name: x\nresources:\n  cpu: 0\n", "resources.cpu: must be > 0"),
    ("name: x\nresources:\n  gpu: -1\n", "resources.gpu: must be >= 0"),
    ("name: x\nteacher:\n  loss: kd\n", "teacher.loss: must be one of ce, mse"),
    ("name: x\nseed: -1\n", "seed: must be >= 0"),
    ("name: x\nsearch:\n  seed: -3\n", "search.seed: must be >= 0"),
    ("name: a/b\n", "name: must be letters, digits"),
    ("name: ..\n", "name: must be letters, digits"),
    ("name: x\nbaselines:\n  kd_reference:\n    loss: ce\n", "baselines.kd_reference: must be KD of the student"),
    ("name: x\nteacher:\n  checkpoint: nowhere/teacher.pt\n", "teacher.checkpoint: nowhere/teacher.pt does not exist"),
    ("name: x\nsearch:\n  max_failures: -1\n", "search.max_failures: must be >= 0"),
    ("name: x\nspace:\n  loss: {type: choice, values: [kd, ce]}\n", "space.loss: must be a choice of distillation"),
    ("name: x\nspace:\n  loss: {type: choice, values: [kd, hinton]}\n", "space.loss.values: must be one of"),
    ("name: x\nspace:\n  beta: {type: uniform, low: 1, high: 8}\n", "space.beta: kd_reference's kd loss takes no beta"),
    ("name: x\nspace:\n  loss: {type: choice, values: [kd, kd_ls]}\n  beta: {type: uniform, low: 1, high: 8}\n",
     "space.beta: none of space.loss.values takes beta"),
    ("name: x\nspace:\n  loss: {type: choice, values: [kd, dkd]}\n  gamma: {type: uniform, low: 0, high: 2, "
     "losses: [dkd]}\n", "space.gamma.losses: dkd: the dkd loss takes no gamma"),
    ("name: x\nspace:\n  loss: {type: choice, values: [kd, dkd]}\n  beta: {type: uniform, low: -1, high: 8}\n",
     "space.beta.low: must be >= 0"),
    ("name: x\nspace:\n  alpha: {type: uniform, low: 0, high: 1, losses: [kd]}\n", "space.alpha.losses: only with"),
    ("name: x\nbaselines:\n  student_ce: {loss: kd, beta: 2}\n", "student_ce.beta: the kd loss takes no beta"),
    ("name: x\nbaselines:\n  student_ce: {loss: dkd, gamma: 1}\n", "student_ce.gamma: the dkd loss takes no gamma"),
    ("name: x\nbaselines:\n  student_ce: {loss: dist, beta: -1}\n", "baselines.student_ce.beta: must be >= 0"),
]


@pytest.mark.parametrize("text,message", BAD_STUDIES)
def test_each_bad_study_gets_a_one_line_error_naming_file_and_key(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_study(path)
    assert str(path) in str(e.value) and message in str(e.value) and "fix:" in str(e.value)
    assert "\n" not in str(e.value)


def test_data_override_into_an_empty_section(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\ndata:\n")
    assert load_study(path, {"data.path": "elsewhere", "data.source": "auto"}).data.path == "elsewhere"


def test_user_errors_exit_2_with_one_line_and_write_nothing(tiny_study, tiny_archive, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nteacher:\n  lr: -1\n")
    cpu_hungry = tmp_path / "hungry.yaml"  # a local Ray would wait forever for 999 cores
    cpu_hungry.write_text(tiny_study.read_text() + "resources:\n  cpu: 999\n")
    gpu_on_cpu = tmp_path / "gpu.yaml"  # a whole GPU per trial for a study that runs on the CPU
    gpu_on_cpu.write_text(tiny_study.read_text() + "device: cpu\nresources:\n  gpu: 1\n")
    not_an_archive = tmp_path / "notes.txt"
    not_an_archive.write_text("not images\n" * 50)
    bad_lr = f"{bad}: teacher.lr: must be > 0 (got -1.0); fix: edit teacher.lr in {bad}"
    no_data = f"data path {tmp_path / 'nope.tar.gz'} does not exist; fix: give --data an image-folder archive"
    not_tar = f"data path {not_an_archive} is a file but not a tar archive; fix: give --data an image-folder archive"
    cases = [  # each case and what its line must say: the file or option, the rule, and the fix
        (("baselines", bad, "--data", tiny_archive, "--results", tmp_path / "r1"), bad_lr),
        (("baselines", tmp_path / "missing.yaml", "--results", tmp_path / "r2"),
         f"study file {tmp_path / 'missing.yaml'} does not exist; fix: give the path of a study YAML file"),
        (("baselines", tiny_study, "--data", tmp_path / "nope.tar.gz", "--results", tmp_path / "r3"), no_data),
        (("validate", bad), bad_lr),
        (("search", bad, "--data", tiny_archive, "--results", tmp_path / "r4"), bad_lr),
        (("search", tiny_study, "--data", tiny_archive, "--results", tmp_path / "r5", "--num-samples", "0"),
         "--num-samples must be >= 1 (got 0); fix: give a positive number"),
        (("search", tiny_study, "--data", tiny_archive, "--results", tmp_path / "r5", "--confirm-seeds", "0"),
         f"{tiny_study}: confirm.seeds: must be >= 1 (got 0); fix: edit confirm.seeds in {tiny_study}"),
        (("search", cpu_hungry, "--data", tiny_archive, "--results", tmp_path / "r6"),
         f"{cpu_hungry}: resources.cpu is 999.0 but this machine has {os.cpu_count()} cores; fix: lower "
         f"resources.cpu in {cpu_hungry}"),
        (("bench", "--data", tiny_archive, "--batches", "0"), "--batches must be >= 1 (got 0); fix: give a positive"),
        (("search", tiny_study, "--data", tmp_path / "nope.tar.gz", "--results", tmp_path / "r7"), no_data),
        (("search", tiny_study, "--data", tiny_archive, "--results", tmp_path / "r8", "--name", "../escape"),
         "--name '../escape' must be a plain folder name (letters, digits, '_', '.', '-'); fix: give another --name"),
        (("search", gpu_on_cpu, "--data", tiny_archive, "--results", tmp_path / "r9"),
         f"{gpu_on_cpu}: resources.gpu is 1.0 but the study runs on the CPU (device: cpu, "
         f"{torch.cuda.device_count()} GPU(s) seen); fix: set resources.gpu to 0 or null"),
        (("baselines", tiny_study, "--data", not_an_archive, "--results", tmp_path / "r10"), not_tar),
        (("search", tiny_study, "--data", not_an_archive, "--results", tmp_path / "r11"), not_tar),
        (("bench", "--data", not_an_archive), not_tar),
    ]
    for args, message in cases:
        r = kdsearch(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("kdsearch: error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 12))
    ok = kdsearch("validate", tiny_study, cwd=tmp_path)
    assert ok.returncode == 0 and "valid study 'tiny'" in ok.stdout


def test_the_engine_runs_without_ray_optuna_or_mlflow(tiny_study, tiny_archive, tmp_path):
    """The engine imports none of them: a machine without them (a GPU box) can train the baselines, and any recipe
    of the study on more seeds (`kdsearch train`), reusing the stored teacher, logit table and runs."""
    results = tmp_path / "r"
    code = ("import sys\n"
            "for m in ('ray', 'optuna', 'mlflow'): sys.modules[m] = None  # any import of them now fails\n"
            "import kdsearch.tools.bench, kdsearch.phase.trial  # the engine's other entry points import none of them either\n"
            "from kdsearch.cli import main\n"
            f"common = [{str(tiny_study)!r}, '--data', {str(tiny_archive)!r}, '--results', {str(results)!r}]\n"
            "assert main(['baselines', *common]) == 0\n"
            "assert main(['train', *common, '--seeds', '0,1']) == 0\n"
            "sys.exit(main(['train', *common, '--set', 'loss=dkd', '--set', 'beta=2', '--recipe', 'kd_reference']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "kd_reference" in r.stdout
    baselines = {row["model"]: row for row in json.loads((results / "tiny" / "baselines.json").read_text())}
    trained = json.loads((results / "tiny" / "train" / "kd_reference.json").read_text())
    # seed 0 is the baseline itself, read back; seed 1 was trained, on the same views and logit table
    assert trained["seeds"] == [0, 1] and trained["stored"] == [True, False]
    assert trained["val_accs"][0] == baselines["kd_reference"]["val_acc"]
    assert trained["val_acc"] == pytest.approx(statistics.mean(trained["val_accs"]))
    assert trained["val_acc_sd"] == pytest.approx(statistics.stdev(trained["val_accs"]))  # over the two seeds
    assert trained["test_acc"] == pytest.approx(statistics.mean(trained["test_accs"]))
    assert trained["test_acc_sd"] == pytest.approx(statistics.stdev(trained["test_accs"]))
    assert trained["config"] == baselines["kd_reference"]["config"]
    assert {"device", "torch", "cpu_threads", "kdsearch", "git_commit"} <= set(trained["evidence"])
    dkd = json.loads((results / "tiny" / "train" / "kd_reference+loss=dkd+beta=2.json").read_text())
    assert dkd["config"]["loss"] == "dkd" and dkd["config"]["beta"] == 2.0 and dkd["seeds"] == [0]
    assert dkd["stored"] == [False]  # another recipe: another run


def test_train_refuses_a_bad_override_in_one_line(tiny_study, tiny_archive, tmp_path):
    common = [tiny_study, "--data", tiny_archive, "--results", tmp_path / "r"]
    for args, message in [(["--set", "beta=2"], "--set: beta: the kd loss takes no beta"),
                          (["--set", "temperature=-1"], "temperature: must be > 0"),
                          (["--set", "lrr=0.1"], "lrr: unknown key"),
                          (["--set", "lr"], "--set 'lr': not KEY=VALUE"),
                          (["--seeds", "0,x"], "--seeds '0,x': not a comma-separated list of seeds")]:
        r = kdsearch("train", *common, *args, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_shipped_study_files_are_valid():
    root = os.path.join(os.path.dirname(__file__), "..", "search_spaces")
    names = sorted(f for f in os.listdir(root) if f.endswith(".yaml"))
    assert {"cifar10_quick.yaml", "cifar10_kd.yaml", "cifar10_students.yaml"} <= set(names)
    from kdsearch.phase.context import resolve_networks
    for name in names:  # as kdsearch validate: the schema, and each network resolved (a file's found)
        resolve_networks(load_study(os.path.join(root, name)), os.path.join(root, name))


def test_bench_figures_are_honest_measurements_with_their_evidence(tiny_archive, tmp_path):
    r = kdsearch("bench", "--data", tiny_archive, "--batches", "1", "--json", tmp_path / "b.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    evidence = result.pop("evidence")
    assert {"seed_loop_img_s", "kd_img_s", "ce_img_s", "teacher_logits_img_s", "views_pad_img_s",
            "views_resized_img_s"} <= set(result)
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    assert {"device", "torch", "cpu_threads", "batch_size", "batches", "repeats", "kdsearch", "git_commit"} <= set(
        evidence)
    from kdsearch.engine.loop import pick_device
    assert evidence["batch_size"] == 256 and evidence["device"].startswith(pick_device().type)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert evidence["git_commit"].startswith(head.stdout.strip()) and len(head.stdout.strip()) == 40  # this checkout
    printed = {line.split()[0]: line for line in r.stdout.splitlines() if line.split()}
    for name, value in result.items():  # the JSON and the printout agree
        assert float(printed[name].split()[1]) == value
    # each printed ratio is the ratio of the printed figures
    ratios = {"kd_img_s": ("kd / seed_loop = ", result["kd_img_s"] / result["seed_loop_img_s"]),
              "ce_img_s": ("ce / kd = ", result["ce_img_s"] / result["kd_img_s"]),
              "kd_notebook_relu_img_s": ("kd / this = ", result["kd_img_s"] / result["kd_notebook_relu_img_s"]),
              "views_resized_img_s": ("pad / this = ", result["views_pad_img_s"] / result["views_resized_img_s"])}
    for name, (label, ratio) in ratios.items():
        shown = float(printed[name].split(label)[1].split("x")[0].rstrip(")"))
        assert shown == pytest.approx(ratio, abs=0.006), (name, shown, ratio)
    assert "training-step throughput" in printed["kd_img_s"]
    assert evidence["torch"] in printed["evidence:"]


def test_run_time_mistakes_get_one_line_within_30_s_and_write_nothing(tiny_study, tiny_archive, tmp_path):
    """A wrong --address, an MLflow server that does not answer or a bad tracking.uri, a results folder that
    cannot be written: each found before Ray, MLflow or a results folder starts."""
    import socket
    import time
    other = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # a server that is not Ray
    try:
        port = int(other.stdout.readline().split(" port ")[1].split()[0])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]  # nothing listens once this socket is closed
        down, unknown = tmp_path / "down.yaml", tmp_path / "unknown.yaml"
        down.write_text(tiny_study.read_text() + f"tracking:\n  uri: http://127.0.0.1:{closed}\n")
        unknown.write_text(tiny_study.read_text() + "tracking:\n  uri: mlfow://typo\n")
        (tmp_path / "afile").write_text("")
        search = ("search", tiny_study, "--data", tiny_archive)
        cases = [
            ((*search, "--results", tmp_path / "r1", "--address", f"127.0.0.1:{closed}"), "no Ray cluster answers"),
            ((*search, "--results", tmp_path / "r2", "--address", f"127.0.0.1:{port}"), "not a Ray cluster"),
            (("search", down, "--data", tiny_archive, "--results", tmp_path / "r3"), "server does not answer"),
            (("search", unknown, "--data", tiny_archive, "--results", tmp_path / "r4"), "unknown scheme 'mlfow'"),
            ((*search, "--results", tmp_path / "afile" / "r5"), "cannot write the results folder"),
        ]
        for args, message in cases:
            start = time.time()
            r = kdsearch(*args, cwd=tmp_path)
            took = time.time() - start
            assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
            assert r.stderr.startswith("kdsearch: error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert took < 30, (args, took)
        assert not any((tmp_path / f"r{i}").exists() for i in range(1, 6))
    finally:
        other.kill()
