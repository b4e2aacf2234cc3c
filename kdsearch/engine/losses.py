"""The training losses: a flat registry, each loss built once per run with its hyperparameters.

`LOSSES[name]` holds a loss's facts: its builder, the optional recipe values it takes (beta, gamma) with their
defaults, and whether it reads the teacher's logits. The study file's rules (schema.py) are read from them, so a
loss added here is known everywhere. `make_loss(recipe)` builds `recipe.loss` with the recipe's values (a null
optional value gets the loss's default) and returns `fn(student_logits, labels, teacher_logits) -> (loss, parts)`,
where `parts` maps each term of the loss to its detached value, unweighted, so that a run can log how its terms
move (the alpha/T trade-off of KD). `labels` are class indices, or for mixed views (augment.py) each view's
(B, classes) label probabilities.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Loss:
    """A registered loss: build(recipe, **takes) -> fn, where `takes` maps each optional recipe value the loss
    takes (beta, gamma) to its default, used when the recipe's value is null. Its name is its key in LOSSES."""
    build: Callable
    takes: dict = field(default_factory=dict)
    needs_teacher: bool = False  # reads the teacher's logits: a distillation loss


LOSSES = {}  # name -> Loss, in registration order


def register(name, needs_teacher=False, **takes):
    """Register the decorated builder as loss `name`, taking the optional recipe values `takes` (name=default)."""
    def add(build):
        LOSSES[name] = Loss(build, takes, needs_teacher)
        return build
    return add


def losses_taking(value):
    """The losses that take the optional recipe value `value` (beta: dkd, dist), in registration order."""
    return tuple(name for name, loss in LOSSES.items() if value in loss.takes)


def _ce(recipe):
    """The hard-label term every loss but mse has: cross-entropy, with the recipe's label smoothing (Szegedy et
    al., CVPR 2016: the target is 1 - eps on the label and eps / classes spread over all classes)."""
    eps = recipe.label_smoothing

    def ce(logits, labels):  # F.cross_entropy takes class indices or probabilities
        return F.cross_entropy(logits, labels, label_smoothing=eps) if eps else F.cross_entropy(logits, labels)
    return ce


@register("ce")
def ce(recipe):
    """Cross-entropy against the hard labels. parts: hard."""
    hard_ce = _ce(recipe)

    def fn(logits, labels, teacher_logits=None):
        loss = hard_ce(logits, labels)
        return loss, {"hard": loss.detach()}
    return fn


@register("mse")
def mse(recipe):
    """MSE between the raw logits and one-hot targets: the notebook's "normal" student. parts: mse."""
    def fn(logits, labels, teacher_logits=None):
        loss = F.mse_loss(logits, _probs(labels, logits.shape[1]).to(logits.dtype))
        return loss, {"mse": loss.detach()}
    return fn


@register("kd", needs_teacher=True)
def kd(recipe):
    """Hinton-style distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
    2015), as in the notebook, where alpha weighs the hard-label term:

        loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

    with the KL averaged over the batch (reduction="batchmean"); s are the student's logits, t the teacher's.
    The T^2 factor keeps the soft term's gradient scale independent of T.
    parts: hard = CE(s, y), soft = T^2 * KL(...), so that loss = alpha * hard + (1 - alpha) * soft.
    """
    T, alpha, hard_ce = recipe.temperature, recipe.alpha, _ce(recipe)

    def fn(logits, labels, teacher_logits):
        hard = hard_ce(logits, labels)
        kl = F.kl_div(F.log_softmax(logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                      reduction="batchmean", log_target=True)
        # ((1 - alpha) * T) * T * kl, not (1 - alpha) * soft: another order rounds differently, and this one is
        # what the stored KD runs were trained with
        loss = alpha * hard + (1 - alpha) * T * T * kl
        return loss, {"hard": hard.detach(), "soft": (T * T * kl).detach()}
    return fn


def _probs(labels, classes):
    """One-hot targets of class indices; label probabilities as they are."""
    return labels if labels.is_floating_point() else F.one_hot(labels, classes)


def _kl(log_p_student, p_teacher):
    """KL(teacher || student) per sample, summed over classes."""
    return F.kl_div(log_p_student, p_teacher, reduction="none").sum(1)


@register("kd_ls", needs_teacher=True)
def kd_ls(recipe):
    """KD on logit-standardised logits (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024):

        loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(z(t) / T) || softmax(z(s) / T)),
        z(x) = (x - mean(x)) / (std(x) + 1e-7), per sample over the classes (std unbiased, as the authors' code)

    so the student matches the shape of the teacher's logits, not their scale: invariant to shifting and scaling
    either's logits. Paper's defaults: T 2, distillation weight 9 to CE 1 (alpha 0.1). parts: hard, soft.
    """
    T, alpha, hard_ce = recipe.temperature, recipe.alpha, _ce(recipe)

    def z(x):
        return (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-7)

    def fn(logits, labels, teacher_logits):
        hard = hard_ce(logits, labels)
        soft = T * T * _kl(F.log_softmax(z(logits) / T, dim=1), F.softmax(z(teacher_logits) / T, dim=1)).mean()
        return alpha * hard + (1 - alpha) * soft, {"hard": hard.detach(), "soft": soft.detach()}
    return fn


@register("dkd", needs_teacher=True, beta=8.0)
def dkd(recipe, beta):
    """Decoupled KD (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022), at temperature T:

        loss = alpha * CE(s, y) + (1 - alpha) * (TCKD + beta * NCKD)
        TCKD = T^2 * KL(b(t) || b(s)), b = (p_target, 1 - p_target) of softmax(x / T)
        NCKD = T^2 * KL(softmax over the non-target classes of t / T || the same of s / T)

    (the target logit masked out by subtracting 1000, as mdistiller). Per sample, Hinton's KD is
    TCKD + (1 - p_target(teacher)) * NCKD: DKD frees NCKD from that weight. Defaults: T 4, beta 8 (the
    registered default, for a null recipe.beta); mdistiller's CE 1, TCKD 1, NCKD 8 is alpha 0.5 here. parts: hard,
    tckd, nckd.
    """
    T, alpha, hard_ce = recipe.temperature, recipe.alpha, _ce(recipe)

    def fn(logits, labels, teacher_logits):
        hard = hard_ce(logits, labels)
        # with mixed labels, the target class is each view's heavier label (at lam 0.5, the lower class index)
        target = F.one_hot(labels.argmax(1) if labels.is_floating_point() else labels, logits.shape[1]).bool()
        p_s, p_t = F.softmax(logits / T, dim=1), F.softmax(teacher_logits / T, dim=1)
        b_s = torch.stack([p_s[target], 1 - p_s[target]], 1).clamp_min(1e-12)
        b_t = torch.stack([p_t[target], 1 - p_t[target]], 1)
        tckd = T * T * _kl(b_s.log(), b_t).mean()
        nckd = T * T * _kl(F.log_softmax(logits / T - 1000.0 * target, dim=1),
                           F.softmax(teacher_logits / T - 1000.0 * target, dim=1)).mean()
        loss = alpha * hard + (1 - alpha) * (tckd + beta * nckd)
        return loss, {"hard": hard.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}
    return fn


@register("dist", needs_teacher=True, beta=1.0, gamma=1.0)
def dist(recipe, beta, gamma):
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022): correlation, not
    exact match, between p_s = softmax(s / T) and p_t = softmax(t / T):

        loss = alpha * CE(s, y) + (1 - alpha) * T^2 * (beta * inter + gamma * intra)
        inter = 1 - mean over samples of pearson(p_s[i, :], p_t[i, :])   (across classes)
        intra = 1 - mean over classes of pearson(p_s[:, c], p_t[:, c])   (across the batch)

    pearson(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8), as the authors' code.
    Defaults: T 1, beta 1, gamma 1 (the registered defaults, for a null recipe.beta / recipe.gamma). parts: hard,
    inter, intra.
    """
    T, alpha, hard_ce = recipe.temperature, recipe.alpha, _ce(recipe)

    def pearson(a, b):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)

    def fn(logits, labels, teacher_logits):
        hard = hard_ce(logits, labels)
        p_s, p_t = F.softmax(logits / T, dim=1), F.softmax(teacher_logits / T, dim=1)
        inter = T * T * (1 - pearson(p_s, p_t).mean())
        intra = T * T * (1 - pearson(p_s.t(), p_t.t()).mean())
        loss = alpha * hard + (1 - alpha) * (beta * inter + gamma * intra)
        return loss, {"hard": hard.detach(), "inter": inter.detach(), "intra": intra.detach()}
    return fn


NEEDS_TEACHER = frozenset(name for name, loss in LOSSES.items() if loss.needs_teacher)  # the distillation losses
OPTIONAL_VALUES = tuple(dict.fromkeys(v for loss in LOSSES.values() for v in loss.takes))  # beta, gamma


def make_loss(recipe):
    """The loss `recipe.loss`, built once with the recipe's hyperparameters."""
    loss = LOSSES[recipe.loss]
    takes = {k: default if getattr(recipe, k) is None else getattr(recipe, k) for k, default in loss.takes.items()}
    return loss.build(recipe, **takes)
