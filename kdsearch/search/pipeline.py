"""The search pipeline, one call per stage (`run_search`).

Checks, Ray, the engine phase, the search, the trials, the confirmation over seeds, the report. The trials are run_trial
(trial.py) under Tune (tuner.py); MLflow is tracker.py's."""
import dataclasses
import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

from kdsearch.core.log import log_stderr
from kdsearch.core.names import ROLES
from kdsearch.phase.context import open_study, resolve_networks
from kdsearch.phase.teacher import logit_mixes
from kdsearch.phase.trial import TrialData
from kdsearch.report import build as reports
from kdsearch.report.students import combine, student_entry
from kdsearch.search.arms import Driver, timed
from kdsearch.search.cluster import start_ray, stop_ray
from kdsearch.search.precheck import precheck
from kdsearch.search.state import SearchState
from kdsearch.search.students import (
    Shared,
    engine_phases,
    networks_info,
    search_student,
    student_cost,
    students_of,
)
from kdsearch.study.schema import MIXES
from kdsearch.study.space import study_arms
from kdsearch.tools.export import STUDENT


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
    dashboard = start_ray(options.address, log, ctx.files)
    record = mark_running(state, record, described, log)
    try:
        with timed(took, "engine_s"):  # and the teacher, baselines and logits, timed once Ray and MLflow are up
            made = {}  # the trials' arrays, one copy for every student
            students = students_of(engine_phases(ctx), lambda c, p: trial_data(c, p.table, resources, trial_device,
                                                                               made))
        arms, first = study_arms(study, log), students[0]
        tracker.start_parent(name, record["search_id"], [study_file, *ctx.files],
                             parent_params(study, networks_info(first.ctx, first.phase), arms), first.phase.rows)
        shared = Shared(arms, resources, results / name, name, dashboard,
                        Driver(state, tracker, options.resume, took, log))
        done = [search_student(s, shared) for s in students]
        report = done[0][0] if len(done) == 1 else several(students, done, shared, study.report.within)
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


def several(students, done, shared, within):
    """The study's report of several students (report.students.combine): each student's own report written in
    students/<label>/, its cost measured, the front and the recommendation; the recommended student's
    student.pt is the search's (kdsearch export's default)."""
    reports_, entries = [], []
    for s, (report, model) in zip(students, done):
        folder = shared.folder / s.folder_in
        reports.write(report, folder, reports.render_figures(report, folder))
        entries.append(student_entry(report, s.ctx.networks.student.spec, s.label, student_cost(s.ctx, model)))
        reports_.append(report)
    report = combine(reports_, entries, within)
    chosen = next(s for s in students if s.ctx.networks.student.spec == report["recommended"])
    shutil.copyfile(shared.folder / chosen.folder_in / STUDENT, shared.folder / STUDENT)
    return report


def mark_running(state, record, described, log):
    """The search's record, written as running: a new one (build_tuner replaces the Tune folder of a finished
    search of this name), or the resumed one's. described: the study as a dict."""
    if record is None:
        return state.write(status="running", search_id=uuid.uuid4().hex, study=described, arms_done=[],
                           command=" ".join(sys.argv[1:]) or "kdsearch search")
    log(f"search: resuming {state.folder.name!r} ({record['status']} at {record.get('stage', 'the start')})")
    return state.write(status="running")


def trial_data(ctx, table, resources, device, made=None):
    """The trials' TrialData: numpy NHWC arrays, which Ray shares zero-copy (engine tensors would be copied into
    every trial process), the logit table of each mixing the trials use (table(mix)), with the threads of one
    trial's CPUs. made: a dict that keeps the arrays made for one student for the next, so that several students
    hold one copy of the images (and of the tables, while they share them)."""
    made = {} if made is None else made

    def nhwc(split):
        return split.x.permute(0, 2, 3, 1).contiguous().cpu().numpy(), split.y.cpu().numpy()

    if "images" not in made:
        made["images"] = (*nhwc(ctx.data.train), *nhwc(ctx.data.val))
    if table not in made:
        made[table] = {m: table(m).cpu().numpy() for m in logit_mixes(ctx.study)}
    return TrialData(*made["images"], made[table], ctx.networks, {m: ctx.views_of(m) for m in MIXES}, device,
                     max(1, int(resources.cpu)))


def describe(study, nets):
    """The study as the search's record holds it (JSON), with the key of each of its networks `nets`
    (context.resolve_networks'; one student's as before several could be named): for --resume, an edited network
    file makes another study."""
    students = [n.key for n in nets["students"]]
    keys = {"teacher": nets["teacher"].key, "student": students[0] if len(students) == 1 else students}
    return json.loads(json.dumps({**dataclasses.asdict(study), "networks": keys}))


def parent_params(study, networks, arms):
    """The MLflow parent's params: the search's size (per arm), its arms, scheduler and seed, each network's spec
    and size."""
    return {"num_samples": study.search.num_samples, "arms": ",".join(a.name for a in arms),
            "scheduler": study.search.scheduler, "seed": study.seed,
            **{f"{role}_{k}": networks[role][k] for role in ROLES for k in ("model", "params")}}


