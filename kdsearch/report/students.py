"""A study of several students: one entry per student (its cost, its kd_best and ce_best rows and the verdict
between them), the front of accuracy against latency and the recommendation (front.py), and the report that
holds them (no torch: the students' costs come measured, engine/cost.py)."""
from kdsearch.report.front import Candidate, front, recommend
from kdsearch.report.stats import mean_interval


def student_entry(report, spec, label, cost):
    """report.json's entry of one student: `report` its own search's report, `cost` its engine.cost.Cost (as a
    dict, with the evidence header of where its latency was measured)."""
    rows = {r["model"]: r for r in report["rows"]}
    control = next((c for c in report.get("comparison") or () if c["b"] == "ce_best"), None)
    return {"spec": spec, "label": label, **{k: cost[k] for k in ("params", "flops", "latency_ms_b1",
                                                                   "latency_ms_b64")},
            "latency": {**cost.get("evidence", {}), **{k: cost[k] for k in ("device", "threads", "repeats")}},
            "kd_best": rows["kd_best"], "ce_best": rows.get("ce_best"),
            "verdict": None if control is None else {k: control[k] for k in ("diff", "ci95", "verdict")}}


def candidates(entries):
    return [Candidate(e["spec"], e["params"], e["latency_ms_b1"], e["kd_best"]["test_acc"]) for e in entries]


def combine(reports, entries, within):
    """The study's report: the recommended student's own report (its rows, verdicts and settings), with
    `students` (entries, in the study's order), `front` (the specs no other beats on both kd_best's mean test
    accuracy and batch-1 latency), `recommended` and `within`, and every student's trials, each with its
    student."""
    cands = candidates(entries)
    chosen = recommend(cands, within)
    top = dict(reports[[e["spec"] for e in entries].index(chosen.spec)])
    top.update(students=entries, front=front(cands), recommended=chosen.spec, within=within,
               trials=[t for r in reports for t in r["trials"]], num_trials=sum(r["num_trials"] for r in reports))
    return top


def recommendation_line(report):
    """e.g. "the smallest student within 1.0 point of the best: torchvision:mobilenet_v3_small (1.5 M params,
    2.1 ms at batch 1), 71.2 % (95 % CI 70.4 to 72.0)"."""
    e = next(s for s in report["students"] if s["spec"] == report["recommended"])
    row, within = e["kd_best"], report["within"]
    ci = mean_interval(row["test_accs"])
    span = f" (95 % CI {ci[0]:.1f} to {ci[1]:.1f})" if ci else f" ({len(row['test_accs'])} seed)"
    return (f"the smallest student within {within:g} point{'s' if within != 1 else ''} of the best: {e['spec']} "
            f"({_count(e['params'])} params, {e['latency_ms_b1']:.2f} ms at batch 1), "
            f"{row['test_acc']:.1f} %{span}")


def _count(n):
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k" if n >= 1e3 else str(n)


def students_table(report):
    """The students as a table: cost, kd_best's and ce_best's test accuracy, whether on the front."""
    head = (f"{'student':<34}{'params':>11}{'MFLOPs':>10}{'ms b1':>8}{'ms b64':>8}{'kd_best test':>14}"
            f"{'ce_best test':>14}  front")
    lines = [head, "-" * len(head)]
    for e in report["students"]:
        ce = f"{e['ce_best']['test_acc']:.2f}%" if e.get("ce_best") else "-"
        lines.append(f"{e['spec']:<34}{e['params']:>11,}{e['flops'] / 1e6:>10.1f}{e['latency_ms_b1']:>8.2f}"
                     f"{e['latency_ms_b64']:>8.2f}{e['kd_best']['test_acc']:>13.2f}%{ce:>14}  "
                     f"{'yes' if e['spec'] in report['front'] else 'no'}")
    return "\n".join(lines)


def students_lines(report):
    """The recommendation, the table and each student's verdict; nothing for a single student."""
    if not report.get("students"):
        return []
    lat = report["students"][0]["latency"]
    return [recommendation_line(report), "", students_table(report),
            f"latency: median of {lat['repeats']} runs on {lat['device']} ({lat['threads']} threads), the exported "
            f"student (pt2)", *[f"{e['spec']}: {e['verdict']['verdict']}" for e in report["students"]
                                 if e.get("verdict")]]


def students_md(report):
    """report.md's section on the students; nothing for a single student."""
    if not report.get("students"):
        return []
    lines = students_lines(report)
    return ["## Which student", "", lines[0] + ".", "", "```", lines[2], "```", "", *lines[3:], "",
            "Below: the recommended student's search. Each student's own report is in students/<label>/.", ""]
