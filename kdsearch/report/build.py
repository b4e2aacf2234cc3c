"""A search's report, and nothing else (no torch): its content (`build`, from the pipeline's records) and its
files (report.json, report.md, trials.csv and the plots of plots.py), which re-render from report.json alone."""
import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from kdsearch.core.names import ARMS, BEST
from kdsearch.core.records import COMPLETED, ROW_FIELDS
from kdsearch.report.control import Costs, comparisons, compute, control_note
from kdsearch.report.stats import mean_sd
from kdsearch.report.students import students_md
from kdsearch.report.tables import (check_lines, compute_line, format_table, networks_lines, notebook_compares,
                                     settings, timings_line, verdict_lines)


@dataclass
class ReportMeta:
    """What a search's report says besides its models and trials."""
    study: str  # the study's name
    name: str  # the search's name (its folder)
    space: dict  # {name: schema.Param}
    importances: dict  # {arm: importance.py's figures}
    mlflow: dict  # the tracker's info
    dashboard: str
    networks: dict  # pipeline.networks_info: the specs, parameter counts, image size, whether the notebook compares
    arms: dict  # {arm: the names its space searches}: kd, and ce when the control arm ran
    control: bool  # search.control: whether the study asked for the control arm
    costs: Costs


def build(meta, rows, confirmation, trials):
    """The report's content, as report.json holds it. rows: the engine phase's Runs (the study's seed);
    confirmation: the confirmation stage's Confirmation; trials: the search's Trials, of every arm."""
    entries, trials = [e.to_json() for e in confirmation.entries], [t.to_json() for t in trials]
    winners = {arm: confirmation.entries[i] for arm, i in confirmation.best.items()}
    seeds = winners["kd"].seeds
    by_model = {e["model"]: e for e in entries if e["trial"] is None}
    best_rows = []
    for arm, w in winners.items():
        trial = _trial(trials, arm, w.trial)
        best_rows.append({"model": BEST[arm], "params": confirmation.student_params, "train_s": trial["train_s"],
                          "config": w.config, "history": w.history, "trial": w.trial, "arm": arm})
        by_model[BEST[arm]] = entries[confirmation.best[arm]]
    out = []
    for r in [r.to_json() for r in rows] + best_rows:
        e = by_model.get(r["model"])
        vals, tests = (e["val_accs"], e["test_accs"]) if e else ([r["val_acc"]], [r["test_acc"]])
        (val, val_sd), (test, test_sd) = mean_sd(vals), mean_sd(tests)
        out.append({**{k: r.get(k) for k in ROW_FIELDS if k not in ("key", "seed")},
                    **{k: r[k] for k in ("trial", "arm") if k in r},
                    "val_acc": val, "test_acc": test,
                    "val_acc_sd": val_sd, "test_acc_sd": test_sd, "val_accs": vals, "test_accs": tests,
                    "seeds": e["seeds"] if e else seeds[:1]})
    per_arm = {arm: sum(t["arm"] == arm for t in trials) for arm in meta.arms}
    return {"study": meta.study, "name": meta.name, "rows": out,
            "best_config": _searched(winners["kd"], meta.arms["kd"], trials, "kd"),  # its loss's values
            "ce_best_config": _searched(winners["ce"], meta.arms["ce"], trials, "ce") if "ce" in winners else None,
            "confirmed": len(seeds) > 1,
            "confirmation": {"seeds": seeds, "note": CONFIRM_NOTE, "entries": entries},
            "comparison": comparisons(out, per_arm.get("kd")) if len(seeds) > 1 else [],
            "arms": {arm: {"baseline": ARMS[arm], "best": BEST[arm], "space": names, "trials": per_arm[arm]}
                     for arm, names in meta.arms.items()},
            "control_note": control_note(meta),
            "compute": compute(meta.costs, trials, meta.arms),
            "num_trials": len(trials),
            "space": {k: dataclasses.asdict(p) for k, p in meta.space.items()},
            "families": families([t for t in trials if t["arm"] == "kd"], meta.space, entries),
            "importances": meta.importances,
            "trials": trials, "mlflow": meta.mlflow, "dashboard": meta.dashboard, "networks": meta.networks}


def _trial(trials, arm, number):
    return next(t for t in trials if t["arm"] == arm and t["number"] == number)


def _searched(winner, names, trials, arm):
    """The winner's searched values (a loss's own only: those its trial holds)."""
    params = _trial(trials, arm, winner.trial)["params"]
    return {k: winner.config[k] for k in names if k in params}


def families(trials, space, confirmed):
    """With a searched loss, one entry per loss family: its trials, how many completed, and its best completed
    trial by (single-seed) validation accuracy, with its mean over seeds when the confirmation ran it."""
    if "loss" not in space:
        return []
    means = {e["trial"]: mean_sd(e["val_accs"])[0] for e in confirmed if e["trial"] is not None
             and len(e["seeds"]) > 1}
    out = []
    for loss in space["loss"].values:
        mine = [t for t in trials if t["params"].get("loss") == loss]
        done = [t for t in mine if t["state"] == COMPLETED and t["val_acc"] is not None]
        top = max(done, key=lambda t: t["val_acc"], default=None)
        out.append({"loss": loss, "trials": len(mine), "completed": len(done),
                    "best": None if top is None else {"trial": top["number"], "val_acc": top["val_acc"],
                                                      "params": top["params"],
                                                      "confirmed_val_acc": means.get(top["number"])}})
    return out


def baselines_note(report):
    """What the fixed rows are: their study recipes, never searched."""
    ce = report["arms"].get("ce")
    return ("student_ce and kd_reference are fixed reference points: each trains by its study recipe (by default "
            "Adam at a constant learning rate on cropped and flipped views) and is never searched; only the trials, "
            f"and so kd_best, moved {', '.join(report['space'])}"
            + (f", and ce_best {', '.join(ce['space'])}." if ce else "."))


CONFIRM_NOTE = ("A seed changes the initialisation and the batch order; the augmented views and the teacher's logit "
                "table stay the study's. Means and 95 % Welch intervals are over seeds; test accuracy was measured "
                "once per model and chose nothing.")


def timings(total_s, trials, engine_s, search_s, confirm_s):
    """A search's wall time, up to the report's figures, in parts: the engine phase (data, teacher, baselines
    and logits, timed once Ray and MLflow are up), the search (Tune's run: the trials' training, the union of
    their training intervals, and its overhead), the confirmation stage (its wall time), and the overhead: all
    but the engine phase, the trials' training and the confirmation (Ray start, trial process start, Optuna,
    MLflow, the report's figures). Writing report.json and .md, logging them to MLflow and Ray's shutdown come
    after the clock stops (a fraction of a second, and about a second)."""
    train_s = _union([(t["train_start"], t["train_end"]) for t in trials if t["train_start"]])
    overhead = total_s - engine_s - train_s - confirm_s
    return {"total_s": total_s, "engine_s": engine_s, "search_s": search_s, "trial_training_s": train_s,
            "confirm_s": confirm_s, "overhead_s": overhead, "overhead_share": overhead / total_s}


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
    from kdsearch.report.plots import plot_report
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _trials_csv(report, folder / "trials.csv")
    return [folder / "trials.csv", *plot_report(report, folder)]


def write(report, folder, figures):
    """report.json and report.md; return them and `figures`."""
    folder = Path(folder)
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    best, m = report["best_config"], report["mlflow"]
    md = [f"# {report['study']}: KD search report", ""]
    arms = report["arms"]
    md += [f"- {line}" for line in verdict_lines(report) + check_lines(report)] + [""]
    md += students_md(report)
    md += [" and ".join(f"{a['trials']} {arm} trials" for arm, a in arms.items()) + "; best KD settings by "
           + ("mean validation accuracy over seeds" if report.get("confirmed") else "validation accuracy") + ": "
           + settings(best, " = ", skip=()) + "."
           + (f" Best CE settings: {settings(report['ce_best_config'], ' = ', skip=())}."
              if report.get("ce_best_config") else ""), "",
           *networks_lines(report), "",
           "```", format_table(report["rows"], times=False, notebook=notebook_compares(report)), "```", "",
           "Validation accuracy chose everything; test accuracy was measured once per model, for this table."
           + (" The notebook column is the notebook's own test-set result (its numbers were tuned on the test set)."
              if notebook_compares(report) else ""), "", baselines_note(report), ""]
    if report.get("confirmed"):
        md += [report["confirmation"]["note"], ""]
    if report.get("timings"):
        md += [timings_line(report), ""]
    if compute_line(report):
        md += [compute_line(report) + ".", ""]
    md += _families_md(report) + _importances_md(report)
    md += [f"MLflow: `{m['ui_command']}` (experiment `{m['experiment']}`, parent run `{m['parent_run_id']}`).", ""]
    md += [f"![{p.stem}]({p.name})" for p in figures if p.suffix == ".png"]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    return [folder / "report.json", folder / "report.md", *figures]


def _families_md(report):
    fams = report.get("families") or []
    if not fams:
        return []
    md = ["## By loss family", "",
          "Each family's best completed trial by its single-seed validation accuracy in the search (with its mean "
          "over seeds when the confirmation re-trained it). A family with few trials is barely explored.", "",
          "| loss | trials (completed) | best val acc | over seeds | trial | its settings |", "|---|---|---|---|---|---|"]
    for f in fams:
        b = f["best"]
        if b is None:
            md.append(f"| {f['loss']} | {f['trials']} ({f['completed']}) | - | - | - | none completed |")
            continue
        mean = f"{b['confirmed_val_acc']:.2f} %" if b.get("confirmed_val_acc") is not None else "-"
        md.append(f"| {f['loss']} | {f['trials']} ({f['completed']}) | {b['val_acc']:.2f} % | {mean} | "
                  f"{b['trial']} | {settings(b['params'])} |")
    return md + [""]


def _importances_md(report):
    if report.get("importances") is None:  # a report from before importances
        return []
    md = ["## Hyperparameter importances", ""]
    for arm, imp in report["importances"].items():
        done = sum(t["state"] == COMPLETED for t in report["trials"] if t["arm"] == arm)
        if not imp:
            why = (f"{done} completed trial(s), fewer than 3" if done < 3 else
                   f"over the {done} completed trials the evaluator found no difference between the best and the "
                   f"rest (equal accuracies), or it failed (the search's log says)")
            md += [f"{arm} arm: not computed: {why}.", ""]
            continue
        hint = " With so few trials they are a rough hint." if done < 20 else ""
        md += [f"{arm} arm, over its {done} completed trials, by {IMPORTANCE_EVALUATOR}.{hint}", "",
               "| hyperparameter | importance |", "|---|---|", *[f"| {k} | {v:.3f} |" for k, v in imp.items()], ""]
    return md


IMPORTANCE_EVALUATOR = ("Optuna's PED-ANOVA evaluator (its default): how much each value's distribution among the "
                        "best 10 % of the completed trials differs from its distribution over all of them, "
                        "normalised to sum to 1")


def _trials_csv(report, path):
    """One line per trial, with its arm (kd, ce); confirmed trials also carry their means over the confirmation's
    seeds."""
    keys = sorted({k for t in report["trials"] for k in t["params"]})
    only = report.get("recommended")  # several students: the confirmation is the recommended one's
    confirmed = {(e["arm"], e["trial"]): e for e in (report.get("confirmation") or {}).get("entries", [])
                 if e["trial"] is not None and report.get("confirmed")}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "arm", "number", "trial_id", "state", *keys, "val_acc", "epochs_run", "train_s",
                    "confirmed_val_acc_mean", "confirmed_test_acc_mean", "confirmed_seeds", "reused", "error"])
        for t in report["trials"]:
            e = confirmed.get((t["arm"], t["number"])) if only in (None, t.get("student")) else None
            means = [mean_sd(e["val_accs"])[0], mean_sd(e["test_accs"])[0], len(e["seeds"])] if e else ["", "", ""]
            w.writerow([t.get("student") or "", t["arm"], t["number"], t["trial_id"], t["state"],
                        *[t["params"].get(k) for k in keys], t["val_acc"], t["epochs_run"], round(t["train_s"], 1),
                        *means, t.get("reused") or "", t.get("error") or ""])
