"""The training losses: a flat registry of builders, each made once per run with its hyperparameters.

`make_loss(recipe)` reads the attributes its loss needs from `recipe` (`loss`, `temperature`, `alpha`, ...) and
returns `fn(student_logits, labels, teacher_logits) -> (loss, parts)`, where `parts` maps each term of the loss to
its detached value, unweighted, so that a run can log how its terms move (the alpha/T trade-off of KD).
"""
import torch.nn.functional as F


def ce(recipe):
    """Cross-entropy against the hard labels. parts: hard."""
    def fn(logits, labels, teacher_logits=None):
        loss = F.cross_entropy(logits, labels)
        return loss, {"hard": loss.detach()}
    return fn


def mse(recipe):
    """MSE between the raw logits and one-hot targets: the notebook's "normal" student. parts: mse."""
    def fn(logits, labels, teacher_logits=None):
        loss = F.mse_loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))
        return loss, {"mse": loss.detach()}
    return fn


def kd(recipe):
    """Hinton-style distillation (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
    2015), as in the notebook, where alpha weighs the hard-label term:

        loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

    with the KL averaged over the batch (reduction="batchmean"); s are the student's logits, t the teacher's.
    The T^2 factor keeps the soft term's gradient scale independent of T.
    parts: hard = CE(s, y), soft = T^2 * KL(...), so that loss = alpha * hard + (1 - alpha) * soft.
    """
    T, alpha = recipe.temperature, recipe.alpha

    def fn(logits, labels, teacher_logits):
        hard = F.cross_entropy(logits, labels)
        kl = F.kl_div(F.log_softmax(logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                      reduction="batchmean", log_target=True)
        # written as before the registry took this shape: the same float operations, the same training
        loss = alpha * hard + (1 - alpha) * T * T * kl
        return loss, {"hard": hard.detach(), "soft": (T * T * kl).detach()}
    return fn


LOSSES = {"ce": ce, "mse": mse, "kd": kd}
NEEDS_TEACHER = {"kd"}  # losses that read the teacher's logits


def make_loss(recipe):
    """The loss `recipe.loss`, built once with the recipe's hyperparameters."""
    return LOSSES[recipe.loss](recipe)
