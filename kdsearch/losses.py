"""Training losses, in a flat registry by name. Each takes (student_logits, labels, teacher_logits, recipe)."""
import torch.nn.functional as F


def ce_loss(logits, labels, teacher_logits=None, recipe=None):
    """Cross-entropy against the hard labels."""
    return F.cross_entropy(logits, labels)


def mse_loss(logits, labels, teacher_logits=None, recipe=None):
    """MSE between the raw logits and one-hot targets: the notebook's "normal" student."""
    return F.mse_loss(logits, F.one_hot(labels, logits.shape[1]).to(logits.dtype))


def kd_loss(logits, labels, teacher_logits, recipe):
    """Hinton-style distillation, as in the notebook (alpha weights the hard-label term):

        loss = alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

    with the KL averaged over the batch (reduction="batchmean"); s are the student's logits, t the teacher's.
    The T^2 factor keeps the soft term's gradient scale independent of T.
    """
    T, alpha = recipe.temperature, recipe.alpha
    hard = F.cross_entropy(logits, labels)
    soft = F.kl_div(F.log_softmax(logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * hard + (1 - alpha) * T * T * soft


LOSSES = {"ce": ce_loss, "mse": mse_loss, "kd": kd_loss}
