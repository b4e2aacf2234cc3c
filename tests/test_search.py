"""The search end to end with a real local Ray, real Optuna and MLflow on an sqlite file."""
import csv
import json
import math
import statistics
import subprocess
import sys
import time

import pytest
from conftest import TINY_STUDY, kdsearch, pixels, plot, stored

MIX = "  mix: {type: choice, values: [none, cutmix]}\n"  # a searched mixing: two logit tables in the trials' data
SEARCH = """\
search:
  num_samples: 3
  stop_at_chance: false  # the tiny teacher (1 epoch, 300 images) is at chance; the test searches anyway
  max_concurrent: 2
resources:
  cpu: 1
confirm:
  top_k: 2
  seeds: 3
"""



@pytest.fixture(scope="module")
def searched(tiny_archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    study = tmp / "tiny.yaml"
    study.write_text(TINY_STUDY + MIX + SEARCH)
    start = time.time()
    first = kdsearch("search", study, "--data", tiny_archive, "--results", tmp / "results", cwd=tmp)
    wall_s = time.time() - start  # the first search's own wall clock, to check its reported timings against
    assert first.returncode == 0, first.stderr[-3000:]
    cache = stored(tmp / "results" / "cache")
    second = kdsearch("search", study, "--data", tiny_archive, "--results", tmp / "results", "--name", "again",
                      cwd=tmp)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp / "results", first, second, (cache, stored(tmp / "results" / "cache")), wall_s


def confirm_runs(report):
    """The MLflow child runs of a search's confirmation stage, and the (recipe, seed) runs its entries needed."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name(report["mlflow"]["experiment"])
    parent = report["mlflow"]["parent_run_id"]
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("mlflow.parentRunId") == parent and r.data.tags.get("kdsearch.stage") == "confirm"]
    needed = {(json.dumps(e["config"], sort_keys=True), s) for e in report["confirmation"]["entries"]
              for s in e["seeds"][1:]}
    return runs, needed


def union(intervals):
    """The length of the union of (start, end) intervals, by a sweep over their sorted ends."""
    covered, edge = 0.0, None
    for a, b in sorted(intervals):
        if edge is None or a > edge:
            covered, edge = covered + b - a, b
        elif b > edge:
            covered, edge = covered + b - edge, b
    return covered


def test_report_has_every_row_and_the_notebook_point_came_first(searched):
    results, first, _, _, wall_s = searched
    report = json.loads((results / "tiny" / "report.json").read_text())
    assert [r["model"] for r in report["rows"]] == ["teacher", "student_mse", "student_ce", "kd_reference", "kd_best",
                                                    "ce_best"]
    for r in report["rows"]:
        assert set(r) >= {"model", "params", "val_acc", "test_acc", "config"}
        assert 0 <= r["val_acc"] <= 100 and 0 <= r["test_acc"] <= 100
    assert report["num_trials"] == 6 and {a: v["trials"] for a, v in report["arms"].items()} == {"kd": 3, "ce": 3}
    assert set(report["best_config"]) == {"temperature", "alpha", "lr", "epochs", "mix"}
    # both mixings were tried, each from its own logit table, made once for the search
    assert {t["params"]["mix"] for t in report["trials"]} == {"none", "cutmix"}
    assert len(list((results / "cache" / "logits").glob("*.pt"))) == 2
    assert set(report["mlflow"]) >= {"tracking_uri", "experiment", "parent_run_id"}
    with open(results / "tiny" / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert (trials[0]["arm"], trials[0]["number"]) == ("kd", "0")
    first_params = {k: float(trials[0][k]) for k in ("temperature", "alpha", "lr", "epochs")}
    assert first_params == {"temperature": 4.5, "alpha": 0.8, "lr": 0.001, "epochs": 2.0}
    assert all(t["state"] == "completed" for t in trials)
    assert "report.md" in first.stdout and "mlflow ui --backend-store-uri sqlite:///" in first.stdout
    assert report["dashboard"].startswith("http://127.0.0.1:")  # the local Ray's, on loopback
    assert "kd_best" in first.stdout
    t = report["timings"]  # its parts, each printed
    assert min(t["engine_s"], t["trial_training_s"], t["confirm_s"], t["overhead_s"]) > 0
    # against what the test measured and what the report's records say, not against each other's definitions:
    # the search's clock runs inside the command's, and its three timed stages follow each other within it
    assert t["engine_s"] + t["search_s"] + t["confirm_s"] < t["total_s"] < wall_s
    # trials' training: the union of the trials' [train_start, train_end], which overlap (2 at a time)
    spans = [(tr["train_start"], tr["train_end"]) for tr in report["trials"]]
    assert all(a < b for a, b in spans) and len(spans) == 6
    assert t["trial_training_s"] == pytest.approx(union(spans))
    assert max(b - a for a, b in spans) <= t["trial_training_s"] <= sum(b - a for a, b in spans)
    for tr in report["trials"]:  # each span holds its trial's own training clock (the engine's, from epoch 1)
        if tr["reused"] is None:  # a baseline's stored run, replayed: its clock is the baseline's, spent before
            assert tr["train_end"] - tr["train_start"] >= tr["train_s"] - 0.01 > 0
    assert t["trial_training_s"] < t["search_s"]
    # the engine phase trained the teacher and the baselines one after the other (the first search stores them)
    rows = {r["model"]: r for r in report["rows"]}
    assert t["engine_s"] > sum(rows[m]["train_s"] for m in ("teacher", "student_mse", "student_ce", "kd_reference"))
    # the confirmation trained its runs (those of seeds 1 and 2, stored), at most 2 at a time
    runs = [json.loads(p.read_text()) for p in (results / "cache" / "runs").glob("*.json")]
    trained = [r["train_s"] for r in runs if r["seed"] != 0]
    assert trained and t["confirm_s"] > max(max(trained), sum(trained) / 2)
    assert (f"{t['engine_s']:.0f} s data, teacher, baselines and logits; search {t['search_s']:.0f} s, of it "
            f"{t['trial_training_s']:.0f} s training trials; {t['confirm_s']:.0f} s confirmation; "
            f"{t['overhead_s']:.0f} s") in first.stdout


def test_the_plots_decode_at_their_size_and_show_the_data(searched):
    """Each PNG decodes at its figure's size and holds its data's colours: the trials' state colours (plots.py's
    COLORS) in the history and in each of the params panels, kd_best's curve, the confirmation's points."""
    from kdsearch.report.plots import COLORS
    folder = searched[0] / "tiny"
    report = json.loads((folder / "report.json").read_text())
    states = {t["state"] for t in report["trials"]}
    history = plot(folder / "history.png", (7, 4))
    for state, color in COLORS.items():  # a state's points are there when a trial ended so, else none are
        assert (pixels(history, color) > 20) == (state in states), (state, pixels(history, color))
    assert pixels(history, "gray") > 50 and pixels(history, "k") > 500  # the baselines' lines, best so far, text
    names = sorted(report["space"])  # one panel per searched value, side by side
    params = plot(folder / "params.png", (3.2 * len(names), 3.2))
    width = params.shape[1] // len(names)
    for i, name in enumerate(names):
        assert pixels(params[:, i * width:(i + 1) * width], COLORS["completed"]) > 20, name
    curves = plot(folder / "curves.png", (7, 4))
    # kd_best's thick curve, the fourth colour of the cycle (student_mse and student_ce train 1 epoch here: a
    # curve of one point draws no line, and kd_reference's may lie under kd_best's); ce_best's is the fifth
    assert [r["model"] for r in report["rows"]][1:] == ["student_mse", "student_ce", "kd_reference", "kd_best",
                                                        "ce_best"]
    assert pixels(curves, "C3") > 200
    entries = report["confirmation"]["entries"]
    confirmation = plot(folder / "confirmation.png", (max(7, 1.4 * len(entries) + 2), 4))
    assert pixels(confirmation, "tab:blue") > 20 and pixels(confirmation, "tab:gray") > 20  # trials, baselines
    assert pixels(confirmation, "tab:green") > 20  # the CE arm's trials


def test_mlflow_has_one_parent_and_a_child_per_trial_with_per_epoch_metrics(searched, tmp_path):
    from mlflow.tracking import MlflowClient
    results, _, _, _, _ = searched
    report = json.loads((results / "tiny" / "report.json").read_text())
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name(report["mlflow"]["experiment"])
    parent_id = report["mlflow"]["parent_run_id"]
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id
                and r.data.tags["kdsearch.stage"] == "search"]
    assert sorted(c.data.tags["kdsearch.arm"] for c in children) == ["ce"] * 3 + ["kd"] * 3
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["kdsearch.state"] == "completed"
        assert child.info.run_name.startswith(f"{child.data.tags['kdsearch.arm']} trial ")
        if child.data.tags["kdsearch.arm"] == "ce":  # no distillation value, and CE's one loss term
            assert set(child.data.params) == {"lr", "epochs", "mix"}
            assert "loss_soft" not in child.data.metrics and "loss_hard" in child.data.metrics
            continue
        assert set(child.data.params) == {"temperature", "alpha", "lr", "epochs", "mix"}
        epochs = int(child.data.params["epochs"])
        for metric in ("val_acc", "train_loss", "loss_hard", "loss_soft"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, metric)] == list(range(1, epochs + 1))
        alpha = float(child.data.params["alpha"])  # the logged terms make up the logged loss
        hard, soft, total = (client.get_metric_history(child.info.run_id, k)[-1].value
                             for k in ("loss_hard", "loss_soft", "train_loss"))
        assert total == pytest.approx(alpha * hard + (1 - alpha) * soft, rel=1e-4)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "kd_best_test_acc" in parent.data.metrics
    ce_best = next(r for r in report["rows"] if r["model"] == "ce_best")
    assert parent.data.metrics["ce_best_test_acc_mean"] == pytest.approx(ce_best["test_acc"])
    assert parent.data.metrics["kd_best_vs_ce_best_diff"] == pytest.approx(report["comparison"][0]["diff"])
    artifacts = {a.path for a in client.list_artifacts(parent_id)} | {
        a.path for a in client.list_artifacts(parent_id, "report")}
    assert "tiny.yaml" in artifacts and "report/report.json" in artifacts
    logged = client.download_artifacts(parent_id, "report/report.json", str(tmp_path))
    assert json.loads(open(logged).read()) == report  # the final report, timings included
    models = client.search_logged_models([exp.experiment_id])
    assert any(m.source_run_id == parent_id and m.name == "kd_best" for m in models)


def test_a_second_search_trains_no_teacher_or_baseline_again(searched):
    results, _, _, (after_first, after_second), _ = searched
    # the store holds the teacher, the baselines, the logit table and the confirmation runs; the second search
    # wrote none of them again (the seeded TPE proposes the same trials, so its confirmation needs the same runs)
    assert {k.split("/")[0] for k in after_first} >= {"data", "teacher", "runs", "logits"}
    assert after_second == after_first
    again = json.loads((results / "again" / "report.json").read_text())
    runs, needed = confirm_runs(again)
    assert len(runs) == len(needed) > 0 and all(r.data.tags["kdsearch.cached"] == "true" for r in runs)


def test_report_command_rerenders_without_training_or_torch(searched, tmp_path):
    results, _, _, _, _ = searched
    (results / "tiny" / "report.md").unlink()
    code = ("import sys\n"
            "from kdsearch.cli import main\n"
            f"code = main(['report', {str(results / 'tiny')!r}])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (results / "tiny" / "report.md").exists() and "kd_best" in r.stdout and r.stderr == ""
    bad = kdsearch("report", tmp_path / "nothing", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("kdsearch: error:") and "report.json" in bad.stderr


def welch_ci(a, b):
    """Welch's 95 % interval for mean(a) - mean(b), written out here from its textbook formula."""
    from scipy.stats import t
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d, half = statistics.mean(a) - statistics.mean(b), t.ppf(0.975, df) * math.sqrt(va + vb)
    return d - half, d + half


def test_confirmation_reports_every_seed_with_welch_intervals_and_verdicts(searched):
    results, first, _, _, _ = searched
    report = json.loads((results / "tiny" / "report.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert report["confirmed"] and report["confirmation"]["seeds"] == [0, 1, 2]
    for name in ("student_ce", "kd_reference", "kd_best", "ce_best"):  # ce_best: confirmed on the same seeds
        r = rows[name]
        assert r["seeds"] == [0, 1, 2] and len(r["val_accs"]) == len(r["test_accs"]) == 3
        assert r["val_acc"] == pytest.approx(statistics.mean(r["val_accs"]))
        assert r["test_acc_sd"] == pytest.approx(statistics.stdev(r["test_accs"]))
    assert rows["teacher"]["seeds"] == [0] and rows["teacher"]["val_acc_sd"] is None
    # seed 0 is the search's trial and the baselines' own run, reused
    for arm, best in (("kd", "kd_best"), ("ce", "ce_best")):
        best_trial = next(t for t in report["trials"] if t["number"] == rows[best]["trial"] and t["arm"] == arm)
        assert rows[best]["val_accs"][0] == best_trial["val_acc"] and rows[best]["arm"] == arm
        # each arm's best: its confirmed trial with the best mean validation accuracy
        entries = [e for e in report["confirmation"]["entries"] if e["arm"] == arm]
        assert len(entries) == 2
        assert rows[best]["trial"] == max(entries, key=lambda e: statistics.mean(e["val_accs"]))["trial"]
    assert report["best_config"] == {k: rows["kd_best"]["config"][k] for k in report["best_config"]}
    assert report["ce_best_config"] == {k: rows["ce_best"]["config"][k] for k in report["ce_best_config"]}
    assert set(report["ce_best_config"]) == {"lr", "epochs", "mix"} and rows["ce_best"]["config"]["loss"] == "ce"
    assert [(c["a"], c["b"]) for c in report["comparison"]] == [("kd_best", "ce_best"), ("kd_best", "student_ce"),
                                                                ("kd_best", "kd_reference")]
    for c in report["comparison"]:
        if rows["kd_best"]["config"] == rows[c["b"]]["config"]:  # kd_best is that baseline's own recipe
            assert c["verdict"] == f"kd_best is {c['b']}'s own setting: nothing to compare"
            continue
        for where, key in ((c, "test_accs"), (c["val"], "val_accs")):
            a, b = rows["kd_best"][key], rows[c["b"]][key]
            assert where["diff"] == pytest.approx(statistics.mean(a) - statistics.mean(b))
            if statistics.variance(a) + statistics.variance(b) > 0:
                assert where["ci95"] == pytest.approx(list(welch_ci(a, b)))
            lo, hi = where["ci95"]
            if c["b"] == "ce_best":  # the control arm's verdict: does distillation pay over the same tuning?
                word = ("distillation adds" if lo > 0 else "distillation loses" if hi < 0 else
                        "no significant gain over a CE student tuned with the same 3 trials")
            else:
                word = "beats" if lo > 0 else "trails" if hi < 0 else "no significant difference"
            assert word in where["verdict"] and "3 seeds each" in where["verdict"]
    # the verdicts lead the printed summary and report.md
    assert first.stdout.splitlines()[0].startswith("test accuracy: " + report["comparison"][0]["verdict"])
    md = (results / "tiny" / "report.md").read_text()
    assert md.index(report["comparison"][1]["verdict"]) < md.index("```")
    with open(results / "tiny" / "trials.csv") as f:
        confirmed = [t for t in csv.DictReader(f) if t["confirmed_seeds"]]
    assert len(confirmed) == 4 and all(t["confirmed_seeds"] == "3" for t in confirmed)


def test_confirmation_runs_are_mlflow_children_with_their_seed(searched):
    from mlflow.tracking import MlflowClient
    results = searched[0]
    report = json.loads((results / "tiny" / "report.json").read_text())
    client = MlflowClient(report["mlflow"]["tracking_uri"])
    parent = report["mlflow"]["parent_run_id"]
    runs, needed = confirm_runs(report)  # one run per recipe and new seed: seed 0's are the trials and baselines
    assert len(runs) == len(needed) > 0 and all(r.data.tags["kdsearch.cached"] == "false" for r in runs)
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.params["seed"] in ("1", "2")
        assert 0 <= r.data.metrics["test_acc"] <= 100 and "val_acc" in r.data.metrics
    metrics = client.get_run(parent).data.metrics
    kd_best = next(r for r in report["rows"] if r["model"] == "kd_best")
    assert metrics["kd_best_val_acc_mean"] == pytest.approx(kd_best["val_acc"])
    assert metrics["student_ce_test_acc_sd"] == pytest.approx(
        next(r for r in report["rows"] if r["model"] == "student_ce")["test_acc_sd"])


def test_each_search_registers_a_new_version_of_its_student_but_one_at_chance_is_no_champion(searched):
    """The tiny teacher is at chance, and so is kd_best (10 % on 100 validation images: chance is 10.0 +- 6.0):
    each search registers its version, and none becomes champion (tests/test_registry.py has the champion's
    rules on a real store)."""
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient
    results = searched[0]
    first, again = (json.loads((results / name / "report.json").read_text()) for name in ("tiny", "again"))
    for report, version in ((first, 1), (again, 2)):
        kd_best = next(r for r in report["rows"] if r["model"] == "kd_best")
        assert kd_best["val_acc"] <= 16.0  # at chance: the premise of this test
        assert report["mlflow"]["registered"] == {"model": "tiny-student", "version": version, "aliases": []}
        assert {"kind": "student_at_chance", "model": "kd_best", "stops": False,
                "line": f"kd_best scores {kd_best['val_acc']:.2f}% on validation, no better than chance (10.0% +- "
                        f"6.0): it is registered, but not as champion"} in report["checks"]
    client = MlflowClient(first["mlflow"]["tracking_uri"])
    assert sorted(int(v.version) for v in client.search_model_versions("name='tiny-student'")) == [1, 2]
    assert client.get_registered_model("tiny-student").aliases == {}
    latest = client.get_model_version("tiny-student", "2")
    assert latest.tags["kdsearch.parent_run_id"] == again["mlflow"]["parent_run_id"]
    assert "test accuracy: " in latest.description and float(latest.tags["kdsearch.val_acc"]) == \
        pytest.approx(next(r for r in again["rows"] if r["model"] == "kd_best")["val_acc"], abs=1e-4)
    mlflow.set_tracking_uri(first["mlflow"]["tracking_uri"])
    model = mlflow.pytorch.load_model("models:/tiny-student/2")  # what a team deploying it loads
    assert tuple(model(torch.zeros(3, 3, 32, 32)).shape) == (3, 10)


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "state_dict"])
def test_the_exported_student_gives_the_trained_students_logits(searched, tiny_archive, fmt, tmp_path):
    import torch

    from kdsearch.data.augment import Views
    from kdsearch.data.dataset import load_arrays, prepare
    from kdsearch.engine.loop import evaluate, predict
    from kdsearch.engine.networks import resolve
    from kdsearch.tools.export import load_student
    folder = searched[0] / "tiny"
    report = json.loads((folder / "report.json").read_text())
    model, saved = load_student(folder)  # kd_best's student, as the search saved it
    data = prepare(load_arrays("auto", tiny_archive), 100, None, 0, torch.device("cpu"))  # the study's split
    views = Views(0, mean=tuple(saved["mean"]), std=tuple(saved["std"]))
    kd_best = next(r for r in report["rows"] if r["model"] == "kd_best")
    assert evaluate(model, data.val, views) == pytest.approx(kd_best["val_accs"][0], abs=1.0)  # within an image
    expected = predict(model, data.val.x, views)
    out = tmp_path / f"student.{fmt}"
    done = kdsearch("export", folder, "--format", fmt, "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    about = json.loads(out.with_name(out.name + ".json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, out.name + ".json"]  # the model is one file
    assert about["classes"] == saved["classes"] and about["normalisation_folded_in"] == (fmt != "state_dict")
    images = data.val.x.float().contiguous() / 255  # what a folded-in export takes: RGB in 0..1
    if fmt == "pt2":
        got = torch.export.load(str(out)).module()(images)
    elif fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"x": images.numpy()})[0])
    else:
        stored = torch.load(out, weights_only=True)
        network = resolve(stored["network"], tmp_path, "the export's network")  # its spec, as a study names it
        net = network.build(stored["num_classes"], tuple(stored["image_size"])).eval()
        net.load_state_dict(stored["state_dict"])
        mean, std = (torch.tensor(stored[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        with torch.no_grad():
            got = net((images - mean) / std)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_export_of_a_folder_without_a_search_is_one_line(tmp_path):
    done = kdsearch("export", tmp_path, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no student.pt" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_control_arm_searches_the_same_budget_without_a_distillation_value(searched):
    """The CE arm: as many trials as the KD arm, the same space less the distillation values, its first trial
    student_ce's stored run; nowhere (report.json, trials.csv, MLflow) does a CE trial carry a distillation value."""
    from kdsearch.study.schema import DISTILLATION
    results = searched[0]
    report = json.loads((results / "tiny" / "report.json").read_text())
    by_arm = {arm: [t for t in report["trials"] if t["arm"] == arm] for arm in ("kd", "ce")}
    assert len(by_arm["kd"]) == len(by_arm["ce"]) == 3
    assert report["arms"]["ce"]["space"] == ["lr", "epochs", "mix"] and report["control_note"] is None
    for t in by_arm["ce"]:
        assert not set(t["params"]) & set(DISTILLATION), t["params"]
    rows = {r["model"]: r for r in report["rows"]}
    for arm, baseline in (("kd", "kd_reference"), ("ce", "student_ce")):  # trial 0: the baseline's own run
        first = next(t for t in by_arm[arm] if t["number"] == 0)
        assert first["reused"] == baseline and first["val_acc"] == rows[baseline]["val_accs"][0]
        assert [h["val_acc"] for h in first["history"]] == [h["val_acc"] for h in rows[baseline]["history"]]
    with open(results / "tiny" / "trials.csv") as f:
        ce_rows = [r for r in csv.DictReader(f) if r["arm"] == "ce"]
    assert len(ce_rows) == 3 and all(r["temperature"] == r["alpha"] == "" for r in ce_rows)
    # what each arm cost: the trials' epochs over the training split; the KD arm also its teacher and tables
    c, train = report["compute"], 400 - 100  # the tiny archive's 400 training images, 100 of them validation
    for arm in ("kd", "ce"):
        assert c[arm]["trial_epochs"] == sum(t["epochs_run"] for t in by_arm[arm])
        assert c[arm]["images_trained"] == c[arm]["trial_epochs"] * train and c[arm]["search_s"] > 0
    assert c["kd"]["teacher"] == {"epochs": 1, "images_trained": train, "train_s": rows["teacher"]["train_s"]}
    assert c["kd"]["logit_tables"]["teacher_forwards"] == 2 * 2 * train  # two mixings, 2 epochs each
    assert "teacher" not in c["ce"]
    md = (results / "tiny" / "report.md").read_text()
    assert md.index(report["comparison"][0]["verdict"]) < md.index("```") and "compute: kd 3 trials" in md


def test_a_report_from_before_the_control_arm_rerenders_as_the_kd_arms(searched, tmp_path):
    """report.json as it was before issue 26 (no arms, trials without `arm`, importances flat) still re-renders:
    read() puts everything in the KD arm."""
    from kdsearch.report.build import render
    from kdsearch.report.stored import read
    report = json.loads((searched[0] / "tiny" / "report.json").read_text())
    report["trials"] = [{k: v for k, v in t.items() if k != "arm"} for t in report["trials"] if t["arm"] == "kd"]
    for e in report["confirmation"]["entries"]:
        e.pop("arm")
    report["rows"] = [{k: v for k, v in r.items() if k != "arm"} for r in report["rows"] if r["model"] != "ce_best"]
    report["importances"], report["num_trials"] = report["importances"]["kd"], 3
    for key in ("arms", "control_note", "compute", "ce_best_config"):
        report.pop(key)
    (tmp_path / "report.json").write_text(json.dumps(report))
    old = read(tmp_path)
    assert {t["arm"] for t in old["trials"]} == {"kd"} and set(old["importances"]) == {"kd"}
    assert next(r for r in old["rows"] if r["model"] == "kd_best")["arm"] == "kd"
    render(old, tmp_path)
    with open(tmp_path / "trials.csv") as f:
        assert [r["arm"] for r in csv.DictReader(f)] == ["kd"] * 3
    assert "3 kd trials; best KD settings" in (tmp_path / "report.md").read_text()
