"""The search report's plots, drawn headless with matplotlib.

The optimisation history, validation accuracy against each searched value, and the learning curves of the best
trial against the baselines."""
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no screen: files only
import matplotlib.pyplot as plt  # noqa: E402

from kdsearch.core.names import BEST, CONFIRMED  # noqa: E402
from kdsearch.core.records import COMPLETED, PRUNED, TRIAL_STATES  # noqa: E402
from kdsearch.report.stats import mean_interval  # noqa: E402


COLORS = dict(zip(TRIAL_STATES, ("tab:blue", "tab:orange", "tab:purple", "tab:red")))  # a trial's, by its state
MARKERS = {"kd": "o", "ce": "s"}  # a trial's, by its arm (the KD search, the CE control arm)
BEST_SO_FAR = {"kd": "-", "ce": "--"}


def plot_report(report, folder):
    """history.png, params.png, curves.png, with a searched loss families.png, with importances importances.png,
    with a confirmation confirmation.png and with several students front.png in `folder`; return their paths."""
    # several students: the trials of the recommended one, whose search the rest of the report is
    trials = [t for t in report["trials"] if t["val_acc"] is not None
              and report.get("recommended") in (None, t.get("student"))]
    paths = [_front(report, folder / "front.png")] if report.get("students") else []
    paths.append(_history(report, trials, folder / "history.png"))
    if any(t["params"] for t in trials):
        paths.append(_params(report, trials, folder / "params.png"))
    paths.append(_curves(report, folder / "curves.png"))
    if report.get("families") and "temperature" in report["space"]:
        paths.append(_families(report, trials, folder / "families.png"))
    if any((report.get("importances") or {}).values()):
        paths.append(_importances(report["importances"], folder / "importances.png"))
    if report.get("confirmed"):
        paths.append(_confirmation(report, folder / "confirmation.png"))
    return paths


def _history(report, trials, path):
    """Each trial's validation accuracy by its number (within its arm), state (colour) and arm (marker: o KD, s
    CE), each arm's best so far (solid KD, dashed CE), the confirmed baselines."""
    baselines = {r["model"]: r for r in report["rows"]}
    fig, ax = plt.subplots(figsize=(7, 4))
    arms = list(dict.fromkeys(t["arm"] for t in trials))
    for arm in arms:
        for state, color in COLORS.items():
            pts = [(t["number"], t["val_acc"]) for t in trials if t["state"] == state and t["arm"] == arm]
            if pts:
                ax.scatter(*zip(*pts), c=color, marker=MARKERS.get(arm, "^"), s=25,
                           label=f"{arm} {state}" if len(arms) > 1 else state)
        best, line = float("-inf"), []
        for t in sorted((t for t in trials if t["arm"] == arm), key=lambda t: t["number"]):
            if t["state"] == COMPLETED:
                best = max(best, t["val_acc"])
            line.append((t["number"], best if best > float("-inf") else None))
        ax.plot([n for n, b in line if b is not None], [b for n, b in line if b is not None], c="k",
                ls=BEST_SO_FAR.get(arm, ":"), label=f"{arm} best so far" if len(arms) > 1 else "best so far")
    for name, style in zip(reversed(CONFIRMED), ("--", ":")):
        if name in baselines:
            ax.axhline(baselines[name]["val_acc"], ls=style, c="gray", label=name)
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title="Optimisation history")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _params(report, trials, path):
    """Validation accuracy against each searched value, in rows of six (a searched recipe has a dozen)."""
    names = sorted({k for t in trials for k in t["params"]})
    cols = min(len(names), 6)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        having = [t for t in trials if name in t["params"]]  # a value some losses do not take
        p = report["space"].get(name, {})
        # a choice is plotted by its listed values' names, null included (matplotlib would drop a None)
        x = [t["params"][name] for t in having]
        if p.get("type") == "choice":
            ax.set_xticks(range(len(p["values"])), ["null" if v is None else str(v) for v in p["values"]])
            x = [p["values"].index(v) for v in x]
        for arm in dict.fromkeys(t["arm"] for t in having):  # the marker tells the arms apart: o KD, s CE
            mine = [(xi, t) for xi, t in zip(x, having) if t["arm"] == arm]
            ax.scatter([xi for xi, _ in mine], [t["val_acc"] for _, t in mine], marker=MARKERS.get(arm, "^"),
                       c=[COLORS.get(t["state"], "k") for _, t in mine], s=20)
        if p.get("type") == "loguniform":
            _log_x(ax)
        ax.set(xlabel=name, ylabel="val acc (%)")
    fig.suptitle("Validation accuracy against each hyperparameter"
                 + (" (o: KD trials, s: CE trials)" if len({t["arm"] for t in trials}) > 1 else ""))
    return _save(fig, path)


def _curves(report, path):
    """The validation curves of kd_best and the baselines (the teacher aside)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [(r["model"], r.get("history") or []) for r in report["rows"] if r["model"] != "teacher"]
    for name, history in curves:
        if history:
            ax.plot([h["epoch"] for h in history], [h["val_acc"] for h in history], label=name,
                    lw=2.5 if name in BEST.values() else 1.2,
                    marker="o" if len(history) == 1 else None)  # a one-epoch curve: a point, else unseen
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves: best trial and baselines")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _families(report, trials, path):
    """Validation accuracy against temperature, one colour per loss family; a completed trial filled, one
    stopped early (pruned) hollow."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for f, color in zip(report["families"], plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        mine = [t for t in trials if t["params"].get("loss") == f["loss"] and "temperature" in t["params"]]
        label = f["loss"]  # on the family's first series only
        for state, face in ((COMPLETED, color), (PRUNED, "none")):
            pts = [(t["params"]["temperature"], t["val_acc"]) for t in mine if t["state"] == state]
            if pts:
                ax.scatter(*zip(*pts), s=28, facecolors=face, edgecolors=color, label=label)
                label = None
    if report["space"]["temperature"].get("type") == "loguniform":
        _log_x(ax)
    ax.set(xlabel="temperature", ylabel="validation accuracy (%)",
           title="Validation accuracy against temperature, by loss family\n(filled: completed, hollow: stopped early)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _importances(by_arm, path):
    """Each hyperparameter's importance (Optuna's evaluator), largest at the top, one panel per arm."""
    shown = {arm: imp for arm, imp in by_arm.items() if imp}
    tall = max(len(imp) for imp in shown.values())
    fig, axes = plt.subplots(1, len(shown), figsize=(6 * len(shown), 0.45 * tall + 1.4), squeeze=False)
    for ax, (arm, imp) in zip(axes[0], shown.items()):
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="tab:blue" if arm == "kd" else "tab:green")
        ax.set(xlabel="importance (sums to 1)", title=f"{arm} arm" if len(shown) > 1 else None)
    fig.suptitle("Hyperparameter importances (PED-ANOVA)")
    return _save(fig, path)


def _confirmation(report, path):
    """Every confirmed model across seeds: each seed a point, the mean a bar, its 95 % t interval a line."""
    entries = report["confirmation"]["entries"]
    best = {(r["arm"], r["trial"]): r["model"] for r in report["rows"] if r["model"] in BEST.values()}
    names = [e["model"] + (f" ({best[e['arm'], e['trial']]})" if (e["arm"], e["trial"]) in best else "")
             for e in entries]
    colour = {"kd": "tab:blue", "ce": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.4 * len(entries) + 2), 4), squeeze=False)
    for ax, metric, label in zip(axes[0], ("val_accs", "test_accs"), ("validation", "test")):
        for x, e in enumerate(entries):
            values = e[metric]
            ax.scatter([x] * len(values), values, s=18,
                       c=colour.get(e["arm"], "tab:gray"))  # a baseline's arm is None: gray
            ci = mean_interval(values)
            if ci:
                ax.errorbar(x, sum(values) / len(values), yerr=[[sum(values) / len(values) - ci[0]],
                                                                [ci[1] - sum(values) / len(values)]],
                            fmt="_", markersize=16, c="k", capsize=4)
        ax.set_xticks(range(len(entries)), names, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel=f"{label} accuracy (%)", title=f"{label.capitalize()}, {len(entries[0]['seeds'])} seeds")
    fig.suptitle("Confirmation: each seed a point, the mean and its 95 % interval")
    return _save(fig, path)


def _front(report, path):
    """Each student's kd_best test accuracy (mean, 95 % t interval over seeds) against its batch-1 latency, the
    front drawn through the students no other beats on both, the recommended one ringed."""
    by = {e["spec"]: e for e in report["students"]}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in report["students"]:
        row = e["kd_best"]
        ci = mean_interval(row["test_accs"])
        err = [[row["test_acc"] - ci[0]], [ci[1] - row["test_acc"]]] if ci else None
        on = e["spec"] in report["front"]
        ax.errorbar(e["latency_ms_b1"], row["test_acc"], yerr=err, fmt="o" if on else "x", capsize=4,
                    c="tab:blue" if on else "tab:gray")
        ax.annotate(e["spec"], (e["latency_ms_b1"], row["test_acc"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.plot([by[s]["latency_ms_b1"] for s in report["front"]], [by[s]["kd_best"]["test_acc"] for s in report["front"]],
            "-", c="tab:blue", lw=1, label="front")
    chosen = by[report["recommended"]]
    ax.scatter([chosen["latency_ms_b1"]], [chosen["kd_best"]["test_acc"]], s=220, facecolors="none",
               edgecolors="tab:red", label=f"recommended (within {report['within']:g} point of the best)")
    lat = report["students"][0]["latency"]
    ax.set(xlabel=f"latency at batch 1 (ms, median of {lat['repeats']}, {lat['device']})",
           ylabel="kd_best test accuracy (%)", title="Which student: accuracy against latency")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _log_x(ax):
    """A log x axis labelled in plain numbers: at 1, 2, 5 x 10^k over a decade or more, at 4 round numbers
    within one (where a log locator falls back to crowded ticks, or none)."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)) if high / low >= 10
                               else matplotlib.ticker.MaxNLocator(4))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
