"""Each student of a study searched with the same budget (issue 28): its own arms (the KD search and the CE
control arm, each its own Tune run, so an early-stopping scheduler compares trials of one student only), its
confirmation over seeds, its report, its kd_best kept (MLflow, the registry, student.pt) and, with several
students, its cost measured (engine/cost.py). The teacher, its logit tables and the data are made once and
shared by all."""
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from kdsearch.engine.cost import measure_cost
from kdsearch.engine.networks import LogitsOnly
from kdsearch.phase.baselines import student_phases
from kdsearch.phase.sanity import best_at_chance, check_study
from kdsearch.report import build as reports
from kdsearch.report.control import Costs
from kdsearch.search.arms import Driver, search_arms, timed
from kdsearch.search.confirm import Workers, confirm
from kdsearch.search.importance import importances
from kdsearch.search.tuner import TuneJob
from kdsearch.study.inputs import student_label, student_subfolder
from kdsearch.tools.evidence import evidence
from kdsearch.tools.export import deployable, save_student


@dataclass
class Shared:
    """What every student's search shares: the arms (space.Arm), one trial's resources, the search's folder and
    name, Ray's dashboard and the Driver."""
    arms: list
    resources: object  # running.Resources, its GPU share resolved
    folder: Path
    name: str
    dashboard: str
    driver: Driver


@dataclass
class Student:
    """One student's place in the search: its context (ctx.for_student), engine phase, trials' data (TrialData),
    the checks of its engine phase, and its label (None: the study's only student, named as before)."""
    ctx: object
    phase: object
    data: object
    checks: list
    label: Optional[str] = None

    @property
    def folder_in(self):
        """Its folder in the search's: students/<label>, or the search's own for the only student."""
        return student_subfolder(self.ctx.networks.student.spec) if self.label else Path()


def engine_phases(ctx):
    """[(student's context, its EnginePhase, its checks)], one per student (baselines.student_phases). A teacher
    at chance stops the search here, before any trial and before the next student's baselines (check_study)."""
    return [(sctx, phase, check_study(sctx, phase)) for sctx, phase in student_phases(ctx)]


def students_of(engine, data_of):
    """The Students of the engine phases (engine_phases'), their trials' data made by data_of(ctx, phase)."""
    several = len(engine) > 1
    return [Student(c, p, data_of(c, p), checks, student_label(c.networks.student.spec) if several else None)
            for c, p, checks in engine]


def search_student(student, shared):
    """One student's search, confirmation and report (report.build's, its checks added), its kd_best kept.
    Returns (report, the student of the study seed's kd_best, a torch module)."""
    ctx, study, driver, label = student.ctx, student.ctx.study, shared.driver, student.label
    mine = dataclasses.replace(driver, arm_s={})  # this student's arms' seconds
    job = TuneJob(student.data, "kd", {}, None, shared.resources, shared.folder, 0, label)
    trials = search_arms(ctx, student.phase, shared.arms, job, mine)
    of = f" of {label}" if label else ""
    driver.state.write(stage=f"the confirmation{of}")
    with timed(driver.took, "confirm_s"):
        confirmation = confirm(ctx, student.phase, trials, Workers(student.data, shared.resources,
                                                                    study.search.max_concurrent), driver.tracker, label)
    driver.state.write(stage=f"the report{of}")
    meta = reports.ReportMeta(study.name, shared.name, study.space, arm_importances(shared.arms, trials, driver.log),
                              driver.tracker.info(), shared.dashboard, networks_info(ctx, student.phase),
                              {a.name: list(a.space) for a in shared.arms}, study.search.control,
                              costs(ctx, student.phase, mine.arm_s))
    report = reports.build(meta, student.phase.rows, confirmation, trials)
    checks = student.checks + best_at_chance(report["rows"], len(ctx.data.val), len(ctx.data.classes))
    report["checks"] = [dataclasses.asdict(c) for c in checks]
    keep_best(ctx, report, confirmation.student, driver.tracker, shared.folder / student.folder_in, label)
    return report, confirmation.student


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


def arm_importances(arms, trials, log):
    """{arm: importance.py's figures over that arm's trials and space}."""
    return {a.name: importances([t.to_json() for t in trials if t.arm == a.name], a.space, log) for a in arms}


def costs(ctx, phase, arm_s):
    """What each arm's search (`arm_s`: {arm: its search's seconds}) and the KD arm's teacher cost
    (report.Costs)."""
    teacher = phase.teacher
    return Costs(len(ctx.data.train), arm_s, len(teacher.history), teacher.train_s, phase.table.forwards,
                 phase.table.seconds)


def keep_best(ctx, report, student, tracker, folder, label=None):
    """kd_best's student logged to MLflow (and registered: <model name>, or <model name>-<label> for one of
    several students, each architecture its own registered model), and saved in `folder` for kdsearch export;
    the report's `mlflow` then names the registered version."""
    from kdsearch.data.augment import plain_views
    example = plain_views(ctx.data.val.x, torch.arange(2, device=ctx.data.val.x.device), ctx.views)
    name = registered_name(ctx.study)
    tracker.log_best(report, LogitsOnly.portable(student), example.contiguous().cpu().numpy(),
                     name and (f"{name}-{label}" if label else name), ctx.log, label)
    report["mlflow"] = tracker.info()
    Path(folder).mkdir(parents=True, exist_ok=True)
    save_student(folder, student, ctx.networks.student, ctx.data, ctx.views)


def registered_name(study):
    """The registered model of the study's kd_best students (None: registering is off)."""
    return (study.tracking.model_name or f"{study.name}-student") if study.tracking.register else None


def student_cost(ctx, model):
    """A student's engine.cost.Cost, as a dict: measured in this process on its exported program (pt2's, the
    normalisation folded in) on the study's device, with the evidence header (device, versions, commit)."""
    views, device = ctx.views, ctx.data.train.x.device
    size = views.size or ctx.data.image_size
    program = deployable(model.eval(), views.mean, views.std, size).module()
    header = evidence(device, torch.get_num_threads())
    return {**dataclasses.asdict(measure_cost(model, program, size, device, header["device"])), "evidence": header}
