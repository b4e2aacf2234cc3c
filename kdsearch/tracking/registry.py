"""The Model Registry: each search's kd_best student as a version of its registered model (tracker.py logs it
first, in the driver)."""
import mlflow
from mlflow.exceptions import MlflowException

CHAMPION = "champion"  # the registered student with the best mean validation accuracy so far


def register(client, parent, name, model_uri, report):
    """A version of the registered model `name` for the kd_best logged as `model_uri` under the search's parent
    run `parent`, once per search (a resumed one finds its version by tag): described by the report's verdicts,
    and aliased `champion` when its mean validation accuracy is at least the current champion's (the tag
    kdsearch.val_acc). The newest version is MLflow's own models:/NAME/latest ("latest" is a reserved alias).
    Returns {"model", "version", "aliases"}."""
    from kdsearch.report.tables import verdict_lines
    mine = client.search_model_versions(f"name = '{name}' and tags.`kdsearch.parent_run_id` = '{parent}'")
    version = mine[0].version if mine else mlflow.register_model(model_uri, name).version
    best = next(r for r in report["rows"] if r["model"] == "kd_best")
    lines = [f"kd_best of search {report['name']!r} (study {report['study']}): {best['val_acc']:.2f}% "
             f"validation, {best['test_acc']:.2f}% test accuracy", *verdict_lines(report)]
    client.update_model_version(name, version, description="\n".join(lines))
    for k, v in {"kdsearch.parent_run_id": parent, "kdsearch.val_acc": f"{best['val_acc']:.6g}"}.items():
        client.set_model_version_tag(name, version, k, v)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
        better = best["val_acc"] >= float(champion.tags.get("kdsearch.val_acc", "-inf"))
    except MlflowException:  # no champion yet
        better = True
    if any(c["kind"] == "student_at_chance" and c["model"] == "kd_best" for c in report.get("checks") or ()):
        better = False  # a student no better than chance is never the one to deploy (phase/sanity.py)
    if better:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {"model": name, "version": int(version), "aliases": [CHAMPION] if better else []}
