"""A study's context, made once and passed down: its validated study file, its data on the device, its store
of models and tensors, its views and networks, and where progress lines go."""
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from kdsearch.core.errors import UserError
from kdsearch.core.log import log_stderr
from kdsearch.core.names import ROLES
from kdsearch.data.augment import PAD, Mix, Views, channel_stats
from kdsearch.data.dataset import CIFAR10_CLASSES, StudyData, cache_arrays, load_arrays, prepare
from kdsearch.engine.loop import set_threads
from kdsearch.engine.netcheck import check, load_teacher_checkpoint
from kdsearch.engine.networks import Networks, resolve_entry
from kdsearch.phase.store import Store
from kdsearch.study.schema import Study


@dataclass(frozen=True)
class Pairing:
    """The teacher with one student of the study: their Networks and the views each is fed (teacher_views None:
    the student's)."""
    networks: Networks
    views: Views
    teacher_views: Optional[Views] = None


@dataclass
class StudyContext:
    study: Study
    data: StudyData
    store: Store
    views: Views  # how every image is seen: crop, flip, normalisation, the study's seed
    networks: Networks  # the teacher and student, for the data's classes and size
    log: Callable[[str], None] = log_stderr
    starts: dict = field(default_factory=dict, repr=False)  # (role, seed) -> its starting weights' accuracies
    teacher_views: Optional[Views] = None  # the teacher's, when its weights expect another normalisation
    pairings: tuple = ()  # one Pairing per student of the study, this context's first (open_study)

    def for_student(self, i):
        """This study's context for its i-th student: its networks and views (the data, store and teacher
        shared)."""
        p = self.pairings[i]
        return dataclasses.replace(self, networks=p.networks, views=p.views, teacher_views=p.teacher_views)

    @property
    def students(self):
        """The study's students' contexts, in the study file's order."""
        return [self.for_student(i) for i in range(len(self.pairings))] if self.pairings else [self]

    @property
    def files(self):
        """The users' network files of every student and the teacher, which Ray ships to its workers."""
        return sorted({f for c in self.students for f in c.networks.files})

    def fed(self, role):
        """The study's views as network `role` is fed them: the same crops and flips, each network normalised as
        its weights expect."""
        return self.teacher_views if role == "teacher" and self.teacher_views is not None else self.views

    @property
    def notebook(self):
        """The notebook's networks on CIFAR-10 at 32x32 with its crop and flip: the tables then show the
        notebook's own results beside kdsearch's."""
        return (self.networks.notebook and self.data.classes == CIFAR10_CLASSES and self.data.image_size == (32, 32)
                and (self.views.padding, self.views.flip, self.views.period) == (PAD, True, None)
                and self.views.crop == "pad" and self.views.size is None)

    def views_of(self, mix, repeat=True, role="student"):
        """The training views of a recipe whose mix is `mix` (none, mixup, cutmix): the study's, mixed by its
        augment.mixup or augment.cutmix, normalised for network `role`; repeat=False: never repeating (the
        teacher's training: augment.period bounds the students' logit tables, and the teacher reads none)."""
        views = mix_views(self.fed(role), self.study.augment, mix)
        return views if repeat else dataclasses.replace(views, period=None)


def mix_views(views, augment, mix):
    """`views` with the mixing `mix` (none, mixup, cutmix) by the study's `augment` settings."""
    if mix == "none":
        return views
    setting = getattr(augment, mix)
    return dataclasses.replace(views, mix=Mix(mix, setting.alpha, setting.prob))


def open_study(study, study_file, results, device, log=log_stderr, nets=None):
    """Threads, data (decoded once, cached under <results>/cache, then held on `device`), its views and the
    store; then the study's networks, built and run once on the CPU on two images of the data's size (and the
    teacher's checkpoint loaded into its network): a mistake in them is a UserError before anything trains."""
    threads, cfg = set_threads(study.threads), study.data
    cache = Path(results) / "cache"
    start = time.perf_counter()
    arrays = load_arrays(cfg.source, cfg.path, cache, cfg.stored_size or cfg.image_size, write=False)
    load_s = time.perf_counter() - start
    if cfg.val_size + (cfg.train_subset or 1) > len(arrays.train_y):
        raise UserError(f"data.val_size ({cfg.val_size}) + data.train_subset ({cfg.train_subset}) exceed the "
                        f"{len(arrays.train_y)} training images of {cfg.path}; fix: lower them in the study file")
    nets = nets or resolve_networks(study, study_file)
    size = (cfg.image_size,) * 2 if cfg.stored_size else arrays.train_x.shape[1:3]
    count = len(nets["students"])
    paired = [study_networks(study, study_file, Networks(nets["teacher"], s, len(arrays.classes), tuple(size)),
                             {**({"teacher": f"{study_file}: models.teacher"} if i == 0 else {}),
                              "student": student_where(study_file, i, count)}, log)
              for i, s in enumerate(nets["students"])]
    cache_arrays(arrays, cache)  # only now: a mistake in the networks leaves nothing behind
    data = prepare(arrays, cfg.val_size, cfg.train_subset, study.seed, device)
    store = Store(cache, log)
    pairings = tuple(pairing(study, study_file, data, store, networks, log) for networks in paired)
    held = f" held at {data.image_size[0]}x{data.image_size[1]}" if cfg.stored_size else ""
    log(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images of "
        f"{size[0]}x{size[1]}{held}, {len(data.classes)} classes (loaded in {load_s:.1f} s), on {device}, "
        f"{threads} CPU threads; networks: teacher {nets['teacher'].spec!r}, student"
        f"{'s' if len(paired) > 1 else ''} {', '.join(repr(n.spec) for n in nets['students'])}")
    first = pairings[0]
    return StudyContext(study, data, store, first.views, first.networks, log, teacher_views=first.teacher_views,
                        pairings=pairings)


def pairing(study, study_file, data, store, networks, log=log_stderr):
    """The Pairing of the teacher with one student (`networks`): the views each is fed."""
    norms = study_norms(study, study_file, networks, log)
    views = study_views(study, data, store, norms["student"])
    teacher = study_views(study, data, store, norms["teacher"]) if norms["teacher"] != norms["student"] else None
    return Pairing(networks, views, teacher)


def resolve_networks(study, study_file):
    """{"teacher": networks.Network, "students": [networks.Network, ...]} as the study file names them (cheap: a
    file's network is hashed, not run); a spec that does not resolve is a UserError naming FILE: models.ROLE."""
    base, students = Path(study_file).parent, study.models.students
    return {"teacher": resolve_entry(study.models.teacher, base, f"{study_file}: models.teacher"),
            "students": [resolve_entry(e, base, student_where(study_file, i, len(students)))
                         for i, e in enumerate(students)]}


def student_where(study_file, i, count):
    """How a message names the i-th of `count` students: FILE: models.student, or models.student[i]."""
    return f"{study_file}: models.student" + (f"[{i}]" if count > 1 else "")


def study_networks(study, study_file, networks, where, log=None):
    """The study's Networks of the teacher and one student, checked (netcheck.check: `log` hears where their
    weights start), with the teacher's checkpoint if any. where: {role: how a message names it} of the roles to
    check (the teacher with the first student only)."""
    check(networks, where, log, roles=tuple(where))
    if "teacher" not in where:
        return networks
    if study.teacher.checkpoint and (networks.teacher.weights or networks.teacher.init):
        raise UserError(f"{study_file}: teacher.checkpoint is used as it is, so models.teacher's weights or init "
                        f"would be ignored; fix: remove one of them (init: fine-tunes from the file, checkpoint: "
                        f"no training)")
    if study.teacher.checkpoint:
        try:
            load_teacher_checkpoint(Path(study.teacher.checkpoint).expanduser(), networks, torch.device("cpu"))
        except UserError as e:
            raise UserError(f"{study_file}: teacher.checkpoint: {e}") from None
    return networks


def study_norms(study, study_file, networks, log):
    """{role: the normalisation (mean, std) network `role` is fed, or None: the data's own statistics}.
    data.mean / data.std decide for both when set; else each network's stated mean / std or its named weights'
    own. Two that differ are each fed their own (said in a line); weights that state none (an init file, a
    teacher checkpoint) are fed the other network's, or the data's own, and a line says so."""
    if study.data.mean is not None and study.data.std is not None:
        return {role: None for role in ROLES}
    expected = {role: getattr(networks, role).expected_norm() for role in ROLES}
    stated = {role: norm for role, norm in expected.items() if norm is not None}
    if len(set(stated.values())) > 1:
        (tm, ts), (sm, ss) = stated["teacher"], stated["student"]
        log(f"{study_file}: the teacher's weights expect mean {tm}, std {ts} and the student's mean {sm}, std {ss}: "
            f"each is fed its own (the logit table holds the teacher's logits of its own normalisation of each "
            f"view); data.mean and data.std would feed both the same")
        return stated
    norm = next(iter(stated.values()), None)
    unstated = [f"models.{role}.init" for role in ROLES if getattr(networks, role).init and expected[role] is None]
    unstated += ["teacher.checkpoint"] if study.teacher.checkpoint and expected["teacher"] is None else []
    for what in unstated:
        fed = f"mean {norm[0]}, std {norm[1]} (the other network's weights')" if norm else "the data's own statistics"
        log(f"{study_file}: {what} states no normalisation, so it is fed {fed}; if it was trained under another, "
            f"give it as mean and std beside it (or data.mean and data.std)")
    return {role: norm for role in ROLES}


def study_views(study, data, store, norm=None):
    """The study's Views: its seed, the crop's padding (default 1/8 of the image's smaller side), the flip, and
    the normalisation: the study's data.mean / data.std, else `norm` (what the networks' weights expect), else
    the training split's own, computed once and stored."""
    mean, std = (study.data.mean, study.data.std) if norm is None else (study.data.mean or norm[0],
                                                                         study.data.std or norm[1])
    if mean is None or std is None:
        stats = store.load_tensor("stats", data.key)
        if stats is None:
            stats = channel_stats(data.train.x)
            store.save_tensor("stats", data.key, stats)
        mean = mean or tuple(round(float(v), 6) for v in stats[0])
        std = std or tuple(round(float(v), 6) for v in stats[1])
    padding, aug, size = study.augment.crop_padding, study.augment, study.data.stored_size and study.data.image_size
    if padding is not None and padding >= min(data.image_size):
        raise UserError(f"augment.crop_padding: {padding} pixels would crop {data.image_size[0]}x"
                        f"{data.image_size[1]} images down to padding alone; fix: give less than "
                        f"{min(data.image_size)} (null: {min(data.image_size) // 8})")
    return Views(study.seed, min(data.image_size) // 8 if padding is None else padding, aug.flip, tuple(mean),
                 tuple(std), period=aug.period, crop=aug.crop, scale=tuple(aug.scale), ratio=tuple(aug.ratio),
                 size=(size, size) if size else None)
