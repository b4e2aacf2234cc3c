"""A search's stored report.json, read back for re-rendering (`kdsearch report`) in this version's shape."""
import json
from pathlib import Path

from kdsearch.core.names import ARMS, BEST


def read(folder):
    """A search's report.json, in this version's shape, for re-rendering: a report from before the control arm
    has every trial, confirmed trial and winner in the KD arm, and its importances are the KD arm's."""
    report = json.loads((Path(folder) / "report.json").read_text())
    for t in report["trials"]:
        t.setdefault("arm", "kd")
    for e in (report.get("confirmation") or {}).get("entries", []):
        e.setdefault("arm", None if e["trial"] is None else "kd")
    for r in report["rows"]:
        if r["model"] in BEST.values():
            r.setdefault("arm", next(arm for arm, name in BEST.items() if name == r["model"]))
    imp = report.get("importances")
    if imp is not None and all(isinstance(v, (int, float)) for v in imp.values()):
        report["importances"] = {"kd": imp}
    report.setdefault("arms", {"kd": {"baseline": ARMS["kd"], "best": BEST["kd"], "space": list(report["space"]),
                                      "trials": report["num_trials"]}})
    return report
