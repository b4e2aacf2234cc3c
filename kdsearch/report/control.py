"""The report's answer to "is distillation worth it?": kd_best against ce_best (the CE control arm's winner) and
the fixed baselines, with Welch intervals over seeds, and what each arm computed. No torch."""
from dataclasses import dataclass

from kdsearch.core.names import CONFIRMED
from kdsearch.report.stats import control_verdict, verdict, welch


@dataclass
class Costs:
    """What a search computed, for the report's `compute`: the training split's size, each arm's Tune run's wall
    seconds ({arm: s}), and what only distillation needs: the teacher's training (epochs, seconds; 0 for a given
    checkpoint) and its logit tables (teacher forwards: rows x images, summed; seconds spent on them now)."""
    train_images: int
    search_s: dict
    teacher_epochs: int
    teacher_s: float
    logit_forwards: int
    logit_s: float


def comparisons(rows, trials=None):
    """kd_best against ce_best (the control arm's winner, first: does distillation pay over the same tuning of
    plain training, with `trials` trials each), then against student_ce and kd_reference: the difference of mean
    test accuracy with its 95 % Welch interval and a verdict; the same for validation accuracy under "val". A
    side with fewer than two seeds (its confirmation failed) is left out."""
    by = {r["model"]: r for r in rows}
    out = []
    for b in ("ce_best", *CONFIRMED):
        a_row, b_row = by["kd_best"], by.get(b)
        if b_row is None or len(b_row["seeds"]) < 2 or len(a_row["seeds"]) < 2:
            continue
        entry = {"a": "kd_best", "b": b}
        for metric, where in (("test_accs", entry), ("val_accs", entry.setdefault("val", {}))):
            if a_row["config"] == b_row["config"]:  # the same recipe: its runs are no independent samples
                where.update({"diff": 0.0, "ci95": [0.0, 0.0],
                              "verdict": f"kd_best is {b}'s own setting: nothing to compare"})
                continue
            diff, ci = welch(a_row[metric], b_row[metric])
            seeds = len(a_row[metric]), len(b_row[metric])
            words = (control_verdict(diff, ci, seeds, trials) if b == "ce_best"
                     else verdict(("kd_best", b), diff, ci, seeds))
            where.update({"diff": diff, "ci95": list(ci), "verdict": words})
        out.append(entry)
    return out


def control_note(meta):
    """Why the report has no kd_best vs ce_best verdict, or None when the control arm ran."""
    if "ce" in meta.arms:
        return None
    if not meta.control:
        return ("no control arm (search.control: false): the gain is measured against the fixed baselines only, "
                "so it mixes what distillation and what the tuning of the recipe gained")
    return ("no control arm: the space searches only distillation values, so a CE student had nothing to tune; "
            "kd_best is compared with the fixed student_ce at the same recipe")


def compute(costs, trials, arms):
    """Each arm's compute: its trials' epochs and the images they trained (epochs x the training split; the
    first trial, its baseline's stored run, counts as what that run took), their training seconds and the arm's
    search wall time; the KD arm also its teacher's training and logit tables, which only distillation needs."""
    out = {}
    for arm in arms:
        mine = [t for t in trials if t["arm"] == arm]
        epochs = sum(t["epochs_run"] for t in mine)
        out[arm] = {"trials": len(mine), "trial_epochs": epochs, "images_trained": epochs * costs.train_images,
                    "train_s": sum(t["train_s"] for t in mine), "search_s": costs.search_s.get(arm)}
    out["kd"]["teacher"] = {"epochs": costs.teacher_epochs, "images_trained": costs.teacher_epochs * costs.train_images,
                            "train_s": costs.teacher_s}
    out["kd"]["logit_tables"] = {"teacher_forwards": costs.logit_forwards, "s": costs.logit_s}
    return out
