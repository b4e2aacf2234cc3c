"""What storing the teacher's logit table in float16 does to a KD run, measured rather than argued.

The table holds logits, not probabilities, so that the temperature stays searchable. float16 keeps 11 significant
bits: each logit moves by at most 2^-11 of itself (a logit of 12 by at most 0.0059), so softmax(t / T) moves by
at most about that / T. Whether that matters depends on the loss, T and how close the student already is to the
teacher (the soft term's gradient is p_s - p_t: small when they agree, so the same rounding is a larger part of
it), hence measured on a study's real teacher and student (`kdsearch precision`) and tested on a small network.
"""
from dataclasses import dataclass

import torch

from kdsearch.engine.networks import logits_of

TABLE_DTYPE = torch.float16  # the logit table's storage; the losses read it converted to float32


@dataclass(frozen=True)
class TableError:
    """One loss's error from the float16 table, over the batches measured: the relative error of the loss
    (|L16 - L32| / |L32|) and of the gradient of the student's weights (|g16 - g32| / |g32|, all weights as one
    vector), the mean and the largest over the batches."""
    name: str
    loss_mean: float
    loss_max: float
    grad_mean: float
    grad_max: float


def half_table_error(model, batches, loss_fns):
    """TableError for each (name, fn) of `loss_fns` (losses.make_loss functions), on `batches`: (x, y, t) with x
    the student's normalised views, y their labels and t the teacher's float32 logits of them. The student runs
    once per batch in train mode, as in training; each loss is taken with t and with t rounded to float16."""
    params = [p for p in model.parameters() if p.requires_grad]
    errors = {name: ([], []) for name, _ in loss_fns}
    model.train()
    for x, y, t in batches:
        out = logits_of(model(x)).float()
        for name, fn in loss_fns:
            loss_errs, grad_errs = errors[name]
            results = []
            for teacher in (t, t.to(TABLE_DTYPE).float()):
                loss = fn(out, y, teacher)[0]
                grads = torch.autograd.grad(loss, params, retain_graph=True)
                results.append((loss.detach().double(), torch.cat([g.flatten() for g in grads]).double()))
            (l32, g32), (l16, g16) = results
            loss_errs.append(((l16 - l32).abs() / l32.abs().clamp_min(1e-30)).item())
            grad_errs.append(((g16 - g32).norm() / g32.norm().clamp_min(1e-30)).item())
    return [TableError(name, sum(le) / len(le), max(le), sum(ge) / len(ge), max(ge))
            for name, (le, ge) in errors.items()]
