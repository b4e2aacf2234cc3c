"""Presentation, and nothing else (no torch): the models table, the baselines' files and the search report.

The report (report.json, report.md, trials.csv and the plots of plots.py) re-renders from report.json alone."""
import csv
import json
import sys
from pathlib import Path

# the notebook's own table: test-set accuracy at its best epoch on the test set (so tuned on the test set)
NOTEBOOK_TEST_ACC = {"teacher": 88.77, "student_mse": 65.59, "kd_reference": 76.84}
ROW_KEYS = ("model", "params", "val_acc", "test_acc", "train_s", "config", "history", "key")


def format_table(rows, times=True):
    """The models table: rows need model, params, val_acc, test_acc, and train_s when `times`."""
    head = f"{'model':<14}{'params':>11}{'val acc':>10}{'test acc':>10}{'notebook':>10}"
    head += f"{'train time':>12}" if times else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        ref = NOTEBOOK_TEST_ACC.get(r["model"])
        line = (f"{r['model']:<14}{r['params']:>11,}{r['val_acc']:>9.2f}%{r['test_acc']:>9.2f}%"
                f"{(f'{ref:.2f}%' if ref else '-'):>10}")
        if times:
            line += f"{r['train_s']:>10.1f} s" + ("  (stored)" if r.get("cached") else "")
        lines.append(line)
    return "\n".join(lines)


def write_baselines(rows, folder):
    """baselines.json (the rows) and baselines.md (the table) in `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "baselines.json", folder / "baselines.md"
    paths[0].write_text(json.dumps([{k: r.get(k) for k in ROW_KEYS} for r in rows], indent=1))
    paths[1].write_text("```\n" + format_table(rows) + "\n```\n")
    return paths


def build(study, name, rows, trials, space, mlflow, dashboard):
    """The report's content. rows: the baselines' and kd_best's rows; space: {name: Param}; mlflow: the
    tracker's info (tracking_uri, experiment, parent_run_id, ui_command)."""
    best = next(r for r in rows if r["model"] == "kd_best")
    return {"study": study, "name": name,
            "rows": [{k: r.get(k) for k in ROW_KEYS if k != "key"} for r in rows],
            "best_config": {k: best["config"][k] for k in space},
            "num_trials": len(trials),
            "space": {k: vars(p) for k, p in space.items()},
            "trials": trials, "mlflow": mlflow, "dashboard": dashboard}


def timings(total_s, engine_s, trials):
    """Three parts of a search's wall time, up to the report's figures: the engine phase (data, teacher, baselines
    and logits, timed once Ray and MLflow are up), the trials' training (the union of their training intervals),
    and the rest, overhead: Ray start, trial process start, Optuna, MLflow (the best model included), the best
    student's test pass and the report's figures. Writing report.json and .md, logging them to MLflow and Ray's
    shutdown come after the clock stops (a fraction of a second, and about a second)."""
    train_s = _union([(t["train_start"], t["train_end"]) for t in trials if t["train_start"]])
    overhead = total_s - engine_s - train_s
    return {"total_s": total_s, "engine_s": engine_s, "trial_training_s": train_s, "overhead_s": overhead,
            "overhead_share": overhead / total_s}


def _union(intervals):
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def render(report, folder):
    """Write every file of the report into `folder`; return the written paths (report.json, report.md first)."""
    return write(report, folder, render_figures(report, folder))


def render_figures(report, folder):
    """trials.csv and the plots; return their paths."""
    from .plots import plot_report
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _trials_csv(report, folder / "trials.csv")
    return [folder / "trials.csv", *plot_report(report, folder)]


def write(report, folder, figures):
    """report.json and report.md; return them and `figures`."""
    folder = Path(folder)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    best, m = report["best_config"], report["mlflow"]
    md = [f"# {report['study']}: KD search report", "",
          f"{report['num_trials']} trials; best KD settings by validation accuracy: "
          + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best.items()) + ".", "",
          "```", format_table(report["rows"], times=False), "```", "",
          "Validation accuracy chose everything; test accuracy was measured once per row, for this table. The "
          "notebook column is the notebook's own test-set result (its numbers were tuned on the test set).", ""]
    if report.get("timings"):
        md += [_timings_line(report), ""]
    md += [f"MLflow: `{m['ui_command']}` (experiment `{m['experiment']}`, parent run `{m['parent_run_id']}`).", ""]
    md += [f"![{p.stem}]({p.name})" for p in figures if p.suffix == ".png"]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    return [folder / "report.json", folder / "report.md", *figures]


def _timings_line(report):
    t = report["timings"]
    return (f"{report['num_trials']} trials; {t['total_s']:.0f} s in all: {t['engine_s']:.0f} s data, teacher, "
            f"baselines and logits; {t['trial_training_s']:.0f} s training trials; {t['overhead_s']:.0f} s "
            f"({100 * t['overhead_s'] / t['total_s']:.1f}%) overhead (Ray start, trial start-up, Optuna, MLflow, report)")


def _trials_csv(report, path):
    keys = sorted({k for t in report["trials"] for k in t["params"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "trial_id", "state", *keys, "val_acc", "epochs_run", "train_s"])
        for t in report["trials"]:
            w.writerow([t["number"], t["trial_id"], t["state"], *[t["params"].get(k) for k in keys],
                        t["val_acc"], t["epochs_run"], round(t["train_s"], 1)])


def print_summary(report, written, out=sys.stdout):
    print(format_table(report["rows"], times=False), file=out)
    if report.get("timings"):
        print("\n" + _timings_line(report), file=out)
    print(f"report: {written[1]}", file=out)
    print(f"MLflow: {report['mlflow']['ui_command']}", file=out)
