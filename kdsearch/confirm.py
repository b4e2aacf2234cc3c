"""The confirmation stage: the best configurations and the CE / KD baselines re-trained on more seeds, in Ray.

A seed changes the initialisation and the batch order; the augmented views and the teacher's logit table stay
the study's. The study's own seed is never trained twice: its runs are the search's trials and the baselines.
The baselines' other seeds are stored like the baselines, so a second search of the study trains none of them.
Test accuracy is measured once per model, at the end of the stage, for the report only; kd_best is the
confirmed configuration with the best mean validation accuracy.
"""
import dataclasses
import json
import time


from .baselines import run_key
from .config import Recipe
from .engine import evaluate, new_model
from .runs import save_run
from .trial import kd_trial
from .tuner import load_checkpoint

CONFIRMED_BASELINES = ("student_ce", "kd_reference")


def _task(recipe, seed, view_seed, **arrays):
    """One confirmation run in a Ray worker: (history, state_dict on the CPU)."""
    history, model = kd_trial({}, base=recipe, seed=seed, view_seed=view_seed, **arrays)
    if history[-1].get("diverged"):
        raise RuntimeError(f"diverged in epoch {len(history)} (the loss became NaN or infinite)")
    return history, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_trial_model(grid, trial, recipe, data, seed):
    """The student of a search trial, from its last checkpoint."""
    model = new_model(recipe["model"], len(data.classes), seed, data.train.x.device)
    checkpoint = next(r for r in grid if (r.metrics or {}).get("trial_id") == trial["trial_id"]).checkpoint
    model.load_state_dict(load_checkpoint(checkpoint, data.train.x.device)["model"])
    return model


def confirm(grid, trials, rows, base, seeds, top_k, data, store, tkey, trial_args, resources, max_concurrent,
            tracker, log):
    """Run the stage; return (entries, index of kd_best's entry, kd_best's student of the study's seed).

    An entry per confirmed model: model, trial (a search trial's number, or None for a baseline), config (the
    whole recipe), seeds, val_accs, test_accs (per seed, in the order of `seeds`), history (the study seed's
    run). With one seed the stage is off: the entry is the best trial alone, unconfirmed. Entries with the same
    recipe (the first trial is kd_reference's point) share their new seeds' runs: each is trained once. A run
    that fails takes its entries out of the confirmation; the search's report still comes.
    """
    done = sorted((t for t in trials if t["state"] == "completed"), key=lambda t: -t["val_acc"])
    entries, models = [], {}  # models: {(entry index, study seed): student}
    for t in done[:top_k if len(seeds) > 1 else 1]:
        config = {**base, **t["params"]}
        models[(len(entries), seeds[0])] = load_trial_model(grid, t, config, data, seeds[0])
        entries.append({"model": f"trial_{t['number']}", "trial": t["number"], "config": config,
                        "runs": {seeds[0]: [t["val_acc"], None]}, "history": t["history"]})
    by_name = {r["model"]: r for r in rows}
    for name in CONFIRMED_BASELINES if len(seeds) > 1 else ():
        r = by_name[name]
        entries.append({"model": name, "trial": None, "config": r["config"], "history": r["history"],
                        "runs": {seeds[0]: [r["val_acc"], r["test_acc"]]}})
    jobs = {}  # (recipe, seed) -> {"entries": [...], "seed", "config", "key": the store key}
    for i, e in enumerate(entries):
        for s in seeds[1:]:
            job = jobs.setdefault((json.dumps(e["config"], sort_keys=True), s),
                                  {"entries": [], "seed": s, "config": e["config"],
                                   "key": run_key(Recipe(**e["config"]), data, s, tkey)})
            job["entries"].append(i)
    todo = []
    for job in jobs.values():
        job["name"] = "=".join(entries[i]["model"] for i in job["entries"])
        stored = store.load_run("runs", job["key"])
        if stored is None:
            todo.append(job)
            continue
        log(f"confirm: {job['name']} seed {job['seed']}: reusing the stored run (val {stored[1]['val_acc']:.2f}%)")
        job["result"] = [stored[1]["val_acc"], stored[1]["test_acc"]]
        tracker.log_confirm_run(job["name"], job["config"], job["seed"], stored[1]["history"], stored[1]["test_acc"],
                                cached=True)
    failed = set()
    for job, result in _run(todo, seeds[0], trial_args, resources, max_concurrent, log):
        if result is None:  # the run raised: its entries leave the confirmation, the search's report stands
            failed.update(job["entries"])
            continue
        history, state = result
        model = new_model(job["config"]["model"], len(data.classes), job["seed"], data.train.x.device)
        model.load_state_dict(state)
        # stored as soon as it is done, with its test accuracy (for the report only, never for a choice), so that
        # a resumed or repeated search trains it no more
        test = evaluate(model, data.test)
        save_run(store, "runs", job["key"], job["name"], model, job["config"], history, test,
                 history[-1]["time_s"], seed=job["seed"])
        job["result"] = [history[-1]["val_acc"], test]
        tracker.log_confirm_run(job["name"], job["config"], job["seed"], history, test)
    for (i, s), model in models.items():
        entries[i]["runs"][s][1] = evaluate(model, data.test)
    for job in jobs.values():
        for i in job["entries"]:
            entries[i]["runs"][job["seed"]] = job.get("result")
    keep = [i for i in range(len(entries)) if i not in failed]
    if not any(entries[i]["trial"] is not None for i in keep):  # every confirmed trial failed: unconfirmed
        keep, seeds = [0], seeds[:1]
    out = [{"model": e["model"], "trial": e["trial"], "config": e["config"], "seeds": seeds,
            "val_accs": [e["runs"][s][0] for s in seeds], "test_accs": [e["runs"][s][1] for s in seeds],
            "history": e["history"]} for e in (entries[i] for i in keep)]
    best = max((i for i, e in enumerate(out) if e["trial"] is not None), key=lambda i: sum(out[i]["val_accs"]))
    return out, best, models[(keep[best], seeds[0])]


def _run(jobs, view_seed, trial_args, resources, max_concurrent, log):
    """Yield (job, (history, state_dict) or None when the run raised) as Ray finishes the runs, at most
    `max_concurrent` at a time (the search's limit), each with the study's per-trial resources."""
    if not jobs:
        return
    import ray
    shared = {k: ray.put(v) if hasattr(v, "shape") else v  # arrays go into the object store once
              for k, v in trial_args.items() if k not in ("base", "seed")}
    task = ray.remote(_task).options(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)
    queue, pending, start = list(jobs), {}, time.time()
    while queue or pending:
        while queue and len(pending) < max_concurrent:
            job = queue.pop(0)
            recipe = dataclasses.asdict(Recipe(**job["config"]))
            pending[task.remote(recipe, job["seed"], view_seed, **shared)] = job
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        try:
            history, state = ray.get(ready[0])
        except Exception as e:  # a task's error: say which run, go on with the others
            first_line = (str(e).strip().splitlines() or [""])[-1][:200]
            log(f"confirm: {job['name']} seed {job['seed']} failed ({type(e).__name__}: {first_line}); "
                f"it leaves the confirmation")
            yield job, None
            continue
        log(f"confirm: {job['name']} seed {job['seed']}: val {history[-1]['val_acc']:.2f}% "
            f"({len(pending) + len(queue)} runs left, {time.time() - start:.0f} s)")
        yield job, (history, state)
