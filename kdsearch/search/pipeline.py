"""The search pipeline, one call per stage (`run_search`).

Checks, Ray, the engine phase, the search, the trials, the confirmation over seeds, the report. The trials are run_trial
(trial.py) under Tune (tuner.py); MLflow is tracker.py's."""
import contextlib
import dataclasses
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import torch

from kdsearch.core.errors import UserError
from kdsearch.core.log import log_stderr
from kdsearch.core.names import ROLES
from kdsearch.core.records import COMPLETED
from kdsearch.engine.networks import LogitsOnly
from kdsearch.phase.baselines import run_baselines
from kdsearch.phase.context import open_study, resolve_networks
from kdsearch.phase.sanity import best_at_chance, check_study
from kdsearch.phase.teacher import logit_mixes
from kdsearch.phase.trial import StoredTrial, TrialData
from kdsearch.report import build as reports
from kdsearch.report.control import Costs
from kdsearch.search.cluster import start_ray, stop_ray
from kdsearch.search.confirm import Workers, confirm
from kdsearch.search.importance import importances
from kdsearch.search.precheck import precheck
from kdsearch.search.searcher import make_searcher
from kdsearch.search.state import SearchState
from kdsearch.search.tune_callback import trial_callback
from kdsearch.search.tuner import TuneJob, build_tuner, collect_trials, fit
from kdsearch.study.schema import MIXES
from kdsearch.study.space import first_point, space_epochs, study_arms
from kdsearch.tools.export import save_student


@dataclasses.dataclass
class Options:
    """A search's command-line options: its results folder, name, Ray cluster and --resume (--num-samples and
    --confirm-seeds are study values, set in the study by the command line)."""
    results: Path
    name: Optional[str] = None  # default: the study's name
    address: Optional[str] = None  # a Ray cluster to join; default: a local Ray
    resume: bool = False


def run_search(study, study_file, options, log=log_stderr):
    """The whole study: baselines, search, confirmation, report. Returns (report, written paths).

    resume: go on with the interrupted search of this name (state.py has the rules): the engine's results come
    from the store, the MLflow parent run and Tune's trials go on where they stopped."""
    t0 = time.time()
    name, results = options.name or study.name, Path(options.results).resolve()
    device, resources, trial_device, uri = precheck(study, study_file, results, options.address)
    nets = resolve_networks(study, study_file)  # once: the same files' hashes for the record, Ray and MLflow
    state, described = SearchState(results / name), describe(study, nets)
    record = state.begin(described, options.resume, log)
    status, took = "FAILED", {}
    with timed(took, "engine_s"):  # the data (a download included) and the networks, before anything of the search
        ctx = open_study(study, study_file, results, device, log, nets)
    state.lock()
    from kdsearch.tracking.tracker import open_tracker  # MLflow loads here, after the cheap checks (3-4 s)
    tracker = open_tracker(uri, study.tracking.experiment or study.name, results / "mlartifacts")
    dashboard = start_ray(options.address, log, ctx.networks.files)
    record = mark_running(state, record, described, log)
    try:
        with timed(took, "engine_s"):  # and the teacher, baselines and logits, timed once Ray and MLflow are up
            phase = run_baselines(ctx)
            checks = check_study(ctx, phase)  # a teacher at chance stops here, before the search's trials
            data = trial_data(ctx, phase.table, resources, trial_device)
        networks = networks_info(ctx, phase)
        arms = study_arms(study, log)
        tracker.start_parent(name, record["search_id"], [study_file, *ctx.networks.files],
                             parent_params(study, networks, arms), phase.rows)
        driver = Driver(state, tracker, options.resume, took, log)
        trials = search_arms(ctx, phase, arms, TuneJob(data, "kd", {}, None, resources, results / name, 0), driver)
        state.write(stage="the confirmation")
        with timed(took, "confirm_s"):
            confirmation = confirm(ctx, phase, trials, Workers(data, resources, study.search.max_concurrent), tracker)
        state.write(stage="the report")
        meta = reports.ReportMeta(study.name, name, study.space, arm_importances(arms, trials, log), tracker.info(),
                                  dashboard, networks, {a.name: list(a.space) for a in arms}, study.search.control,
                                  costs(ctx, phase, driver.arm_s))
        report = reports.build(meta, phase.rows, confirmation, trials)
        checks += best_at_chance(report["rows"], len(ctx.data.val), len(ctx.data.classes))
        report["checks"] = [dataclasses.asdict(c) for c in checks]
        keep_best(ctx, report, confirmation.student, tracker, results / name)
        figures = reports.render_figures(report, results / name)
        report["timings"] = reports.timings(time.time() - t0, report["trials"], took["engine_s"], took["search_s"],
                                            took["confirm_s"])
        written = reports.write(report, results / name, figures)
        tracker.log_report(written)
        status = "FINISHED"
        return report, written
    except KeyboardInterrupt:
        status = "KILLED"
        if tracker.parent is not None:
            tracker.end_lost_and_running(None, "KILLED")
        raise
    finally:
        tracker.close_parent(status)
        state.write(status={"FINISHED": "finished", "KILLED": "interrupted"}.get(status, "failed"))
        if options.address is None:
            stop_ray()


@dataclasses.dataclass
class Driver:
    """What drives a search's arms: its record (state.SearchState), its MLflow tracker, --resume, the stages'
    clocks (timed), where progress lines go, and each arm's search seconds ({arm: s})."""
    state: SearchState
    tracker: object
    resume: bool
    took: dict
    log: object
    arm_s: dict = dataclasses.field(default_factory=dict)


def search_arms(ctx, phase, arms, job, driver):
    """Each arm's search (space.Arm), one Tune run each, the KD search first: `job` (a TuneJob) made the arm's
    (its baseline's recipe and stored run, its longest trial). An arm that finished before an interruption is
    read back on resume (search.json's arms_done). Returns the Trials of every arm; driver.took gets the
    seconds (search_s), driver.arm_s each arm's."""
    trials = []
    for arm in arms:
        record = driver.state.write(stage=f"the {arm.name} search")
        mine = dataclasses.replace(job, arm=arm.name, base=dataclasses.asdict(arm.base),
                                   reuse=stored_trial(ctx, phase, arm), max_epochs=space_epochs(arm.space, arm.base))
        with timed(driver.took, "search_s"), timed(driver.arm_s, arm.name):
            done = driver.resume and arm.name in record.get("arms_done", [])
            trials += search_trials(arm, mine, ctx.study.search, driver, done)
        driver.state.write(arms_done=list(dict.fromkeys([*record.get("arms_done", []), arm.name])))
        driver.tracker.end_lost_and_running({t.trial_id for t in trials}, "KILLED", arm.name)
    return trials


def search_trials(arm, job, search, driver, done):
    """One arm's search (a space.Arm): Tune's trials of `job` (a TuneJob) as records, each mirrored into MLflow
    by driver.tracker; done: the arm finished before an interruption, its trials are read back, nothing runs. A
    UserError when none of them completed. Both arms get the same searcher, seed, trial count and scheduler
    (`search`, the study's running.Search)."""
    first = first_point(arm.space, arm.base, driver.log, arm.baseline)
    tuner = build_tuner(job, make_searcher(arm.space, search.seed, first), search,
                        [trial_callback(driver.tracker, list(arm.space), driver.log, arm.name)], driver.resume)
    trials = collect_trials(tuner.get_results() if done else fit(tuner), list(arm.space), arm.name)
    if not any(t.state == COMPLETED for t in trials):
        raise UserError(f"none of the {len(trials)} trials of the {arm.name} arm completed; fix: read the trials' "
                        f"errors in {job.folder / 'trials.csv'} and {job.path}/*/error.txt")
    return trials


def stored_trial(ctx, phase, arm):
    """The StoredTrial of the arm's baseline (its stored run of the study's seed), which the arm's trial at that
    very recipe is; None when the store lost it (the trial then trains it again)."""
    run = phase.baselines[arm.baseline]
    stored = ctx.store.load_run("runs", run.key)
    return None if stored is None else StoredTrial(run.model, dataclasses.asdict(arm.base), run.history, stored.state)


def arm_importances(arms, trials, log):
    """{arm: importance.py's figures over that arm's trials and space}."""
    return {a.name: importances([t.to_json() for t in trials if t.arm == a.name], a.space, log) for a in arms}


def costs(ctx, phase, arm_s):
    """What each arm's search (`arm_s`: {arm: its search's seconds}) and the KD arm's teacher cost
    (report.Costs)."""
    teacher = phase.teacher
    return Costs(len(ctx.data.train), arm_s, len(teacher.history), teacher.train_s, phase.table.forwards,
                 phase.table.seconds)


def keep_best(ctx, report, student, tracker, folder):
    """kd_best's student logged to MLflow (and registered), and saved in `folder` for kdsearch export; the
    report's `mlflow` then names the registered version."""
    tracker.log_best(report, LogitsOnly.portable(student), _example_input(ctx.data, ctx.views),
                     registered_name(ctx.study), ctx.log)
    report["mlflow"] = tracker.info()
    save_student(folder, student, ctx.networks.student, ctx.data, ctx.views)


@contextlib.contextmanager
def timed(took, key):
    """Add the seconds the block took to took[key]."""
    start = time.time()
    yield
    took[key] = took.get(key, 0.0) + time.time() - start


def mark_running(state, record, described, log):
    """The search's record, written as running: a new one (build_tuner replaces the Tune folder of a finished
    search of this name), or the resumed one's. described: the study as a dict."""
    if record is None:
        return state.write(status="running", search_id=uuid.uuid4().hex, study=described, arms_done=[],
                           command=" ".join(sys.argv[1:]) or "kdsearch search")
    log(f"search: resuming {state.folder.name!r} ({record['status']} at {record.get('stage', 'the start')})")
    return state.write(status="running")


def trial_data(ctx, table, resources, device):
    """The trials' TrialData: numpy NHWC arrays, which Ray shares zero-copy (engine tensors would be copied into
    every trial process), the logit table of each mixing the trials use (table(mix)), with the threads of one
    trial's CPUs."""
    def nhwc(split):
        return split.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), split.y.cpu().numpy()

    (tx, ty), (vx, vy) = nhwc(ctx.data.train), nhwc(ctx.data.val)
    return TrialData(tx, ty, vx, vy, {m: table(m).cpu().numpy() for m in logit_mixes(ctx.study)}, ctx.networks,
                     {m: ctx.views_of(m) for m in MIXES}, device, max(1, int(resources.cpu)))


def networks_info(ctx, phase):
    """The report's `networks`: each network's spec, parameter count and the normalisation it is fed, the images'
    size and class count, and whether the notebook's table compares (its networks on CIFAR-10 at 32x32)."""
    def net(role, params):
        views = ctx.fed(role)
        return {"model": getattr(ctx.networks, role).spec, "params": params, "mean": list(views.mean),
                "std": list(views.std)}
    return {"teacher": net("teacher", phase.teacher.params),
            "student": net("student", phase.baselines["student_ce"].params),
            "image_size": list(ctx.networks.image_size), "classes": len(ctx.data.classes), "notebook": ctx.notebook}


def describe(study, nets):
    """The study as the search's record holds it (JSON), with the key of each of its networks `nets`
    ({role: networks.Network}): for --resume, an edited network file makes another study."""
    keys = {role: n.key for role, n in nets.items()}
    return json.loads(json.dumps({**dataclasses.asdict(study), "networks": keys}))


def registered_name(study):
    """The registered model kd_best's student becomes a version of, or None (tracking.register: false)."""
    return (study.tracking.model_name or f"{study.name}-student") if study.tracking.register else None


def parent_params(study, networks, arms):
    """The MLflow parent's params: the search's size (per arm), its arms, scheduler and seed, each network's spec
    and size."""
    return {"num_samples": study.search.num_samples, "arms": ",".join(a.name for a in arms),
            "scheduler": study.search.scheduler, "seed": study.seed,
            **{f"{role}_{k}": networks[role][k] for role in ROLES for k in ("model", "params")}}


def _example_input(data, views):
    from kdsearch.data.augment import plain_views
    return plain_views(data.val.x, torch.arange(2, device=data.val.x.device), views).contiguous().cpu().numpy()
