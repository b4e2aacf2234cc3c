"""The confirmation stage: the best configurations and the CE / KD baselines re-trained on more seeds, in Ray.

A seed changes the initialisation and the batch order; the augmented views and the teacher's logit table stay
the study's. The study's own seed is never trained twice: its runs are the search's trials and the baselines.
The baselines' other seeds are stored like the baselines, so a second search of the study trains none of them.
Test accuracy is measured once per model, at the end of the stage, for the report only. Each arm's top_k go
through it alike; kd_best (ce_best: the CE control arm's) is its arm's confirmed configuration with the best
mean validation accuracy.
"""
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional

from kdsearch.core.errors import first_line
from kdsearch.core.names import ARMS, CONFIRMED
from kdsearch.core.progress import progress
from kdsearch.core.records import COMPLETED
from kdsearch.engine.loop import evaluate, new_model
from kdsearch.engine.models import count_params
from kdsearch.phase.baselines import run_key
from kdsearch.phase.runs import RunSpec
from kdsearch.phase.trial import TrialData, run_trial, load_state
from kdsearch.study.running import Resources
from kdsearch.study.schema import Recipe


@dataclass
class ConfirmEntry:
    """One confirmed model: a search trial (its number, its arm) or a baseline (trial and arm None), its whole
    recipe, and its validation and test accuracy per seed, in the order of `seeds`; history: the study seed's
    run."""
    model: str
    trial: Optional[int]
    config: dict
    seeds: list
    val_accs: list
    test_accs: list
    history: list = field(default_factory=list)
    arm: Optional[str] = None  # kd, ce (names.ARMS); None: a baseline

    def to_json(self):
        return {k: v for k, v in vars(self).items() if k != "history"}


@dataclass
class Confirmation:
    entries: list  # ConfirmEntry
    best: dict  # {arm: its winner's index in entries}: kd_best's, ce_best's (names.BEST)
    student: object  # kd_best's student of the study's seed (a torch module)

    @property
    def student_params(self):
        return count_params(self.student)


@dataclass
class Workers:
    """Where the confirmation's runs go: Ray workers with the trials' data, resources and concurrency."""
    data: TrialData
    resources: Resources  # per run, its GPU share resolved
    max_concurrent: int


def _task(recipe, seed, data):
    """One confirmation run in a Ray worker: (history, state_dict on the CPU)."""
    history, model = run_trial(recipe, data, seed)
    if history[-1].get("diverged"):
        raise RuntimeError(f"diverged in epoch {len(history)} (the loss became NaN or infinite)")
    return history, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def confirm(ctx, phase, trials, workers, tracker, label=None):
    """Run the stage; return a Confirmation. `phase`: the engine phase (the baselines' Runs); `trials`: the
    search's Trials, each with its last checkpoint; label: with several students, the one confirmed (its runs
    named <label>/<model> in MLflow).

    With one seed the stage is off: the entries are each arm's best trial alone, unconfirmed. Entries with the
    same recipe (each arm's first trial is its baseline's point) share their new seeds' runs: each is trained
    once. A run that fails takes its entries out of the confirmation; an arm whose every entry failed keeps its
    best trial, unconfirmed; the search's report still comes.
    """
    seeds = [ctx.study.seed + i for i in range(ctx.study.confirm.seeds)]
    entries, students = _entries(ctx, phase, trials, seeds)

    def named(model):
        return f"{label}/{model}" if label else model
    key_of, served = {}, {}  # (entry, seed) -> its run's store key; key -> (recipe, seed, the entries it serves)
    for i, e in enumerate(entries):
        recipe = Recipe(**e.config)
        for s in seeds[1:]:  # entries of one recipe share a run: each recipe and seed is trained once
            key_of[i, s] = run_key(ctx, recipe, s, phase.teacher.key)
            served.setdefault(key_of[i, s], (recipe, s, []))[2].append(i)
    results, todo = {}, []  # results: store key -> (val, test)
    for key, (recipe, seed, indices) in served.items():
        spec = RunSpec("=".join(entries[i].model for i in indices), recipe, seed, key)
        stored = ctx.store.load_run("runs", key)
        if stored is None:
            todo.append(spec)
            continue
        run = stored.run
        ctx.log(f"confirm: {spec.name} seed {seed}: reusing the stored run (val {run.val_acc:.2f}%)")
        results[key] = run.val_acc, run.test_acc
        tracker.log_confirm_run(named(spec.name), dataclasses.asdict(recipe), seed, run.history, run.test_acc,
                                cached=True)
    failed = set()
    for spec, result in _run(todo, workers, ctx.log):
        if result is None:  # the run raised: its entries leave the confirmation, the search's report stands
            failed.update(served[spec.key][2])
            continue
        history, state = result
        model = new_model(ctx.networks, spec.recipe.model, spec.seed, ctx.data.train.x.device)
        model.load_state_dict(state)
        # stored as soon as it is done, with its test accuracy (for the report only, never for a choice), so that
        # a resumed or repeated search trains it no more
        run = spec.save(ctx.store, model, history, evaluate(model, ctx.data.test, ctx.views), history[-1]["time_s"])
        results[spec.key] = run.val_acc, run.test_acc
        tracker.log_confirm_run(named(spec.name), run.config, spec.seed, history, run.test_acc)
    for i, student in students.items():  # the study seed's trial students: test accuracy once, now
        entries[i].test_accs[0] = evaluate(student, ctx.data.test, ctx.views)
    for i, e in enumerate(entries):
        for s in seeds[1:]:
            val, test = results.get(key_of[i, s], (None, None))
            e.seeds.append(s)
            e.val_accs.append(val)
            e.test_accs.append(test)
    return _winners(entries, failed, students)


def _winners(entries, failed, students):
    """The Confirmation: the entries but the `failed` ones (an arm whose every entry failed keeps its best trial,
    unconfirmed), each arm's winner by mean validation accuracy, and kd_best's student."""
    keep = [i for i in range(len(entries)) if i not in failed]
    arms = list(dict.fromkeys(e.arm for e in entries if e.arm is not None))
    for arm in arms:
        if not any(entries[i].arm == arm for i in keep):  # its every confirmed trial failed: its best, unconfirmed
            first = next(i for i, e in enumerate(entries) if e.arm == arm)
            for name in ("seeds", "val_accs", "test_accs"):
                setattr(entries[first], name, getattr(entries[first], name)[:1])
            keep = sorted([*keep, first])
    kept = [entries[i] for i in keep]
    best = {arm: max((i for i, e in enumerate(kept) if e.arm == arm), key=lambda i: sum(kept[i].val_accs))
            for arm in arms}
    return Confirmation(kept, best, students[keep[best["kd"]]])


def _entries(ctx, phase, trials, seeds):
    """The models to confirm, each with the study seed's result: each arm's top_k completed trials (their
    students read from their checkpoints; test accuracy measured later; a CE arm's named ce_trial_N), then the
    CONFIRMED baselines. Returns (entries, {entry index: student}); with one seed, each arm's best trial alone."""
    entries, students = [], {}
    for arm in dict.fromkeys(t.arm for t in trials):  # in the search's order: kd, then ce
        done = sorted((t for t in trials if t.arm == arm and t.state == COMPLETED), key=lambda t: -t.val_acc)
        base = phase.baselines[ARMS[arm]].config
        for t in done[:ctx.study.confirm.top_k if len(seeds) > 1 else 1]:
            config = {**base, **t.params}
            student = new_model(ctx.networks, config["model"], seeds[0], ctx.data.train.x.device, start=False)
            student.load_state_dict(load_state(t.checkpoint, ctx.data.train.x.device).model)
            students[len(entries)] = student
            entries.append(ConfirmEntry(f"trial_{t.number}" if arm == "kd" else f"{arm}_trial_{t.number}",
                                        t.number, config, [seeds[0]], [t.val_acc], [None], t.history, arm))
    for name in CONFIRMED if len(seeds) > 1 else ():
        r = phase.baselines[name]
        entries.append(ConfirmEntry(name, None, r.config, [seeds[0]], [r.val_acc], [r.test_acc], r.history))
    return entries, students


def _run(specs, workers, log):
    """Yield (spec, (history, state_dict) or None when the run raised) as Ray finishes the runs of `specs`
    (RunSpecs), at most `workers.max_concurrent` at a time (the search's limit), each with the
    study's per-trial resources."""
    if not specs:
        return
    import ray
    data = ray.put(workers.data)  # its arrays go into the object store once
    task = ray.remote(_task).options(num_cpus=workers.resources.cpu, num_gpus=workers.resources.gpu,
                                     max_retries=0)
    queue, pending, start = list(specs), {}, time.time()
    with progress(len(specs), "confirmation", log, unit="runs") as bar:
        while queue or pending:
            while queue and len(pending) < workers.max_concurrent:
                spec = queue.pop(0)
                pending[task.remote(spec.recipe, spec.seed, data)] = spec
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                history, state = ray.get(ready[0])
            except Exception as e:  # a task's error: say which run, go on with the others
                bar.note(f"confirm: {spec.name} seed {spec.seed} failed ({first_line(str(e))}); it leaves the "
                         f"confirmation")
                bar.step("")
                yield spec, None
                continue
            status = f"{spec.name} seed {spec.seed}: val {history[-1]['val_acc']:.2f}%"
            bar.step(f"confirm: {status} ({len(pending) + len(queue)} runs left, {time.time() - start:.0f} s)",
                     status)
            yield spec, (history, state)
