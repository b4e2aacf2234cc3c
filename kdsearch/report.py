"""The study report: report.json (everything, so that `kdsearch report` can re-render it), report.md,
trials.csv and PNG plots. Test accuracy appears only for the report's rows, each measured once."""
import csv
import json
from pathlib import Path

from .baselines import format_table

ROW_ORDER = ("teacher", "student_mse", "student_ce", "kd_reference", "kd_best")


def format_rows(rows):
    return format_table(rows, times=False)


def render(report, folder):
    """Write report.json, report.md, trials.csv and the plots into `folder`; return the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    _trials_csv(report, folder / "trials.csv")
    plots = _plots(report, folder)
    best = report["best_config"]
    md = [f"# {report['study']}: KD search report", "",
          f"{report['num_trials']} trials; best KD settings by validation accuracy: "
          + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in best.items()) + ".", "",
          "```", format_rows(report["rows"]), "```", "",
          "Validation accuracy chose everything; test accuracy was measured once per row, for this table. The "
          "notebook column is the notebook's own test-set result (its numbers were tuned on the test set).", "",
          f"MLflow: `{report['mlflow']['ui_command']}` (experiment `{report['mlflow']['experiment']}`, parent run "
          f"`{report['mlflow']['parent_run_id']}`).", ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    return [folder / "report.json", folder / "report.md", folder / "trials.csv", *plots]


def _trials_csv(report, path):
    keys = sorted({k for t in report["trials"] for k in t["params"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "trial_id", "state", *keys, "val_acc", "epochs_run", "train_s"])
        for t in report["trials"]:
            w.writerow([t["number"], t["trial_id"], t["state"], *[t["params"].get(k) for k in keys],
                        t["val_acc"], t["epochs_run"], round(t["train_s"], 1)])


def _plots(report, folder):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in report["trials"] if t["val_acc"] is not None]
    baselines = {r["model"]: r for r in report["rows"]}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"completed": "tab:blue", "pruned": "tab:orange", "failed": "tab:red"}
    for state, color in colors.items():
        pts = [(t["number"], t["val_acc"]) for t in trials if t["state"] == state]
        if pts:
            ax.scatter(*zip(*pts), c=color, label=state, s=25)
    best, line = float("-inf"), []
    for t in sorted(trials, key=lambda t: t["number"]):
        if t["state"] == "completed":
            best = max(best, t["val_acc"])
        line.append((t["number"], best if best > float("-inf") else None))
    ax.plot([n for n, b in line if b is not None], [b for n, b in line if b is not None], c="k", label="best so far")
    for name, style in (("kd_reference", "--"), ("student_ce", ":")):
        if name in baselines:
            ax.axhline(baselines[name]["val_acc"], ls=style, c="gray", label=name)
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title="Optimisation history")
    ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "history.png"))

    names = sorted({k for t in trials for k in t["params"]})
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
        for ax, name in zip(axes[0], names):
            xs = [t["params"][name] for t in trials]
            ax.scatter(xs, [t["val_acc"] for t in trials], c=[colors.get(t["state"], "k") for t in trials], s=20)
            if report["space"].get(name, {}).get("type") == "loguniform":
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
            ax.set(xlabel=name, ylabel="val acc (%)")
        fig.suptitle("Validation accuracy against each hyperparameter")
        paths.append(_save(fig, folder / "params.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [(r["model"], r.get("history") or []) for r in report["rows"] if r["model"] != "teacher"]
    for name, history in curves:
        if history:
            ax.plot([h["epoch"] for h in history], [h["val_acc"] for h in history], label=name,
                    lw=2.5 if name == "kd_best" else 1.2)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves: best trial and baselines")
    ax.legend(fontsize=8)
    paths.append(_save(fig, folder / "curves.png"))
    return paths


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
