"""Presentation on the terminal, and nothing else (no torch): the models table, the baselines' files, `kdsearch
train`'s table and a search's summary, from report documents (report.json's shape)."""
import json
import sys
from pathlib import Path

from kdsearch.core.names import NEUTRAL
from kdsearch.core.records import ROW_FIELDS
from kdsearch.report.stats import mean_sd

# a Run as baselines.json and the report's rows hold it
# the notebook's own table: test-set accuracy at its best epoch on the test set (so tuned on the test set)
NOTEBOOK_TEST_ACC = {"teacher": 88.77, "student_mse": 65.59, "kd_reference": 76.84}


def format_table(rows, times=True, notebook=True):
    """The models table: rows need model, params, val_acc, test_acc, and train_s when `times`. Rows with seeds
    (a search's report) show means over seeds, each with its sd and the number of seeds. notebook: a column with
    the notebook's own results (only for its networks on CIFAR-10)."""
    over_seeds = any(len(r.get("seeds") or ()) > 1 for r in rows)
    head = f"{'model':<14}{'params':>11}"
    head += (f"{'val acc (sd)':>17}{'test acc (sd)':>17}{'seeds':>7}" if over_seeds
             else f"{'val acc':>10}{'test acc':>10}")
    head += (f"{'notebook':>10}" if notebook else "") + (f"{'train time':>12}" if times else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        ref = NOTEBOOK_TEST_ACC.get(r["model"])
        line = f"{r['model']:<14}{r['params']:>11,}"
        if over_seeds:
            line += "".join(f"{r[m]:>9.2f}% {_sd(r.get(m + '_sd')):>6}" for m in ("val_acc", "test_acc"))
            line += f"{len(r['seeds']):>7}"
        else:
            line += f"{r['val_acc']:>9.2f}%{r['test_acc']:>9.2f}%"
        line += f"{(f'{ref:.2f}%' if ref else '-'):>10}" if notebook else ""
        if times:
            line += f"{r['train_s']:>10.1f} s" + ("  (stored)" if r.get("cached") else "")
        lines.append(line)
    return "\n".join(lines)


def trained_json(trained, evidence):
    """`kdsearch train`'s JSON: a phase.train.Trained's runs, their mean and sd over the seeds, the evidence."""
    runs = trained.runs
    vals, tests = [r.val_acc for r in runs], [r.test_acc for r in runs]
    (val, val_sd), (test, test_sd) = mean_sd(vals), mean_sd(tests)
    return {"name": trained.name, "config": trained.config, "seeds": [r.seed for r in runs],
            "val_accs": vals, "test_accs": tests, "val_acc": val, "val_acc_sd": val_sd, "test_acc": test,
            "test_acc_sd": test_sd, "train_s": [r.train_s for r in runs], "stored": [r.cached for r in runs],
            "evidence": evidence}


def format_trained(out):
    """`kdsearch train`'s table: one line per seed, then the mean and sd, then the evidence."""
    lines = [f"{out['name']}: {out['config']['model']} with {out['config']['loss']}, {out['config']['epochs']} epochs",
             f"{'seed':>6}{'val acc':>10}{'test acc':>10}{'train time':>12}", "-" * 38]
    for seed, val, test, secs, stored in zip(out["seeds"], out["val_accs"], out["test_accs"], out["train_s"],
                                             out["stored"]):
        lines.append(f"{seed:>6}{val:>9.2f}%{test:>9.2f}%{secs:>10.1f} s" + ("  (stored)" if stored else ""))
    lines.append(f"{'mean':>6}{out['val_acc']:>9.2f}%{out['test_acc']:>9.2f}%")
    if out["val_acc_sd"] is not None:
        lines.append(f"{'sd':>6}{out['val_acc_sd']:>10.2f}{out['test_acc_sd']:>10.2f}")
    e = out["evidence"]
    lines.append(f"evidence: {e['device']}; torch {e['torch']}; {e['cpu_threads']} CPU threads; {len(out['seeds'])} "
                 f"seed(s); kdsearch {e['kdsearch']} ({e['git_commit'] or 'no git commit'}); {e['date']}")
    return "\n".join(lines)


def _sd(sd):
    return f"({sd:.2f})" if sd is not None else ""


def notebook_compares(report):
    """Whether a report's table compares with the notebook's (reports before `networks` existed all did)."""
    return report.get("networks", {}).get("notebook", True)


def networks_lines(report):
    """The networks a report distilled, e.g. "networks: teacher = torchvision:resnet18 (11,181,642 params),
    student = ..."; nothing for a report from before `networks` existed."""
    n = report.get("networks")
    if not n:
        return []
    h, w = n["image_size"]
    t, s = n["teacher"], n["student"]
    fed = [] if (t.get("mean"), t.get("std")) == (s.get("mean"), s.get("std")) else [
        f"each network fed its own normalisation: teacher mean {_rgb(t['mean'])}, std {_rgb(t['std'])}; student mean "
        f"{_rgb(s['mean'])}, std {_rgb(s['std'])}"]
    return [f"networks: teacher = {t['model']} ({t['params']:,} params), student = {s['model']} ({s['params']:,} "
            f"params); {h}x{w} images, {n['classes']} classes"] + fed + start_lines(report["rows"])


def _rgb(values):
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def start_lines(rows):
    """What training gave the rows that started from weights (pretrained or init), e.g. "teacher: fine-tuned
    from its starting weights: val 12.40% -> 61.30%, test 11.90% -> 60.70%"."""
    return [f"{r['model']}: trained from its starting weights: val {r['start']['val_acc']:.2f}% -> "
            f"{r['val_accs'][0] if r.get('val_accs') else r['val_acc']:.2f}%, test {r['start']['test_acc']:.2f}% -> "
            f"{r['test_accs'][0] if r.get('test_accs') else r['test_acc']:.2f}%" for r in rows if r.get("start")]


def write_baselines(rows, folder, notebook=True):
    """baselines.json (the rows) and baselines.md (the table) in `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "baselines.json", folder / "baselines.md"
    paths[0].write_text(json.dumps([{k: r.get(k) for k in ROW_FIELDS} for r in rows], indent=1))
    paths[1].write_text("```\n" + format_table(rows, notebook=notebook) + "\n```\n")
    return paths


def settings(params, sep=" ", skip=("loss",)):
    """e.g. "temperature 3.558, alpha 0.6459, ema null": floats to 4 significant digits, None as YAML's null."""
    def shown(v):
        return f"{v:.4g}" if isinstance(v, float) else "null" if v is None else str(v)
    return ", ".join(f"{k}{sep}{shown(v)}" for k, v in params.items() if k not in skip)


SHORT = {"temperature": "T", "alpha": "α", "beta": "β", "gamma": "γ", "weight_decay": "wd", "label_smoothing": "ls",
         "warmup_epochs": "warm-up", "grad_clip": "clip", "batch_size": "batch", "momentum": "mom"}
QUIET = {**NEUTRAL, "schedule": "none"}  # the values a run's name leaves out
CORE = ("temperature", "alpha", "beta", "gamma", "lr")  # a trial's distillation settings, named first


def _num(v):
    """3 significant digits; below 0.01 as 1.4e-3."""
    if isinstance(v, float) and 0 < abs(v) < 0.01:
        mantissa, exp = f"{v:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def recipe_label(params):
    """A trial's searched values in a few characters, for its MLflow run name: "kd_ls T 3.56 α 0.646 lr 1.4e-3
    10 ep", then the training levers that are set, "· cosine ema 0.999 mixup"."""
    def one(k, v):
        return k if v is True else str(v) if isinstance(v, str) else f"{SHORT.get(k, k)} {_num(v)}"
    core = ([str(params["loss"])] if "loss" in params else []) + [one(k, params[k]) for k in CORE if k in params]
    core += [f"{params['epochs']} ep"] if "epochs" in params else []
    levers = [one(k, v) for k, v in params.items() if k not in (*CORE, "loss", "epochs")
              and not (k in QUIET and v == QUIET[k])]
    return " · ".join(p for p in (" ".join(core), " ".join(levers)) if p)


def verdict_lines(report):
    """The verdicts that lead the report: kd_best against ce_best (the control arm's), or why there is none, then
    against each fixed baseline; or why there are none."""
    if "confirmation" not in report:
        return ["kd_best is unconfirmed: this report predates the confirmation over seeds; no intervals."]
    note = [report["control_note"]] if report.get("control_note") else []
    if not report.get("confirmed"):
        return ["kd_best is unconfirmed: it is the best single-seed trial (confirm.seeds: 1); no intervals."] + note
    return note + [f"test accuracy: {c['verdict']}" for c in report["comparison"]]


def check_lines(report):
    """Why the study may not work (phase/sanity.py's findings), one line each."""
    return [f"check: {c['line']}" for c in report.get("checks") or ()]


def compute_line(report):
    """What each arm computed, e.g. "compute: kd 12 trials, 96 trial-epochs (384,000 images), 212 s training, 150 s
    search; plus its teacher (8 epochs, 32,000 images, 60 s) and logit tables (120,000 teacher forwards, 31 s) ·
    ce ..."."""
    c = report.get("compute")
    if not c:
        return None
    parts = []
    for arm, a in c.items():
        text = (f"{arm} {a['trials']} trials, {a['trial_epochs']} trial-epochs ({a['images_trained']:,} images), "
                f"{a['train_s']:.0f} s training" + (f", {a['search_s']:.0f} s search" if a.get("search_s") else ""))
        if "teacher" in a:
            t, lt = a["teacher"], a["logit_tables"]
            text += (f"; plus its teacher ({t['epochs']} epochs, {t['images_trained']:,} images, {t['train_s']:.0f} s) "
                     f"and logit tables ({lt['teacher_forwards']:,} teacher forwards, {lt['s']:.0f} s here)")
        parts.append(text)
    return "compute: " + " · ".join(parts)


def timings_line(report):
    t = report["timings"]
    search = f"search {t['search_s']:.0f} s, of it " if "search_s" in t else ""
    return (f"{report['num_trials']} trials; {t['total_s']:.0f} s in all: {t['engine_s']:.0f} s data, teacher, "
            f"baselines and logits; {search}{t['trial_training_s']:.0f} s training trials; "
            f"{t.get('confirm_s', 0):.0f} s confirmation; {t['overhead_s']:.0f} s "
            f"({100 * t['overhead_s'] / t['total_s']:.1f}%) overhead (Ray start, trial start-up, Optuna, MLflow, report)")


def print_summary(report, written, out=sys.stdout):
    from kdsearch.report.students import students_lines
    for line in students_lines(report):
        print(line, file=out)
    if report.get("students"):
        print(f"\nthe recommended student, {report['recommended']}:", file=out)
    for line in verdict_lines(report) + check_lines(report):
        print(line, file=out)
    print("", file=out)
    for line in networks_lines(report):
        print(line, file=out)
    print(format_table(report["rows"], times=False, notebook=notebook_compares(report)), file=out)
    if report.get("families") or report.get("importances"):
        print("", file=out)
    for f in report.get("families") or ():
        b = f["best"]
        print(f"best {f['loss']}: " + (f"{b['val_acc']:.2f}% val (trial {b['trial']}; {settings(b['params'])})"
                                       if b else "no completed trial"), file=out)
    for arm, imp in (report.get("importances") or {}).items():
        if imp:
            print(f"importances ({arm}): " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()), file=out)
    if compute_line(report):
        print(compute_line(report), file=out)
    if report.get("timings"):
        print("\n" + timings_line(report), file=out)
    print(f"report: {written[1]}", file=out)
    print(f"MLflow: {report['mlflow']['ui_command']}", file=out)
