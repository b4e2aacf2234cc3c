"""A recipe's training levers besides its loss: the optimizer, the learning-rate schedule and an exponential
moving average of the weights. Imports torch only.

The schedule is stepped once per epoch (a function of the epoch, so a resumed run gets the same rates), and the
average is updated after every optimiser step. Both are part of a run's state, which a checkpoint holds."""
import copy
import math

import torch


def make_optimizer(model, recipe):
    """Adam, AdamW (decoupled weight decay: Loshchilov and Hutter, ICLR 2019) or SGD (with Nesterov momentum when
    asked), at the recipe's peak learning rate."""
    params = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                               nesterov=recipe.nesterov)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25 / 1e4  # torch's OneCycleLR defaults (div_factor, final_div_factor)


def lr_factor(recipe, epoch):
    """The learning rate of 0-based `epoch`, as a fraction of recipe.lr.

    - warm-up (warmup_epochs w, or 30 % of the epochs for onecycle when w is 0): linear, (e + 1) / (w + 1) of
      the peak, or for onecycle from 1/25 of it up to the peak;
    - then, over the remaining epochs: constant (none), a cosine to 0 (cosine), or for onecycle a cosine down
      to 1/25/1e4 of the peak (Smith and Topin's one-cycle, with torch's OneCycleLR defaults, per epoch)."""
    w = recipe.warmup_epochs or (max(1, round(0.3 * recipe.epochs)) if recipe.schedule == "onecycle" else 0)
    if epoch < w:
        if recipe.schedule == "onecycle":
            return ONECYCLE_START + (1 - ONECYCLE_START) * epoch / w
        return (epoch + 1) / (w + 1)
    t = (epoch - w) / max(1, recipe.epochs - w)
    cosine = 0.5 * (1 + math.cos(math.pi * t))
    if recipe.schedule == "cosine":
        return cosine
    if recipe.schedule == "onecycle":
        return ONECYCLE_END + (1 - ONECYCLE_END) * cosine
    return 1.0


def make_schedule(opt, recipe):
    """The per-epoch schedule (None: a constant rate). A plain cosine is torch's CosineAnnealingLR, whose
    recursive update every cosine run stored so far was trained with (the closed form rounds differently)."""
    if recipe.warmup_epochs == 0 and recipe.schedule in ("none", "cosine"):
        return None if recipe.schedule == "none" else torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: lr_factor(recipe, epoch))


def make_ema(model, decay):
    """An EMA of `model` (below), or None without a decay."""
    return None if decay is None else EMA(model, decay)


class EMA:
    """An average of a model's weights and buffers (BatchNorm's statistics too), updated by update_parameters
    after every step: avg <- avg + (1 - d) (w - avg), with d = min(decay, (1 + n) / (10 + n)) at its update after
    n others (the first copies), TensorFlow's ExponentialMovingAverage with num_updates, so that a short run is
    not dominated by its initial weights. `module` is the averaged network.

    Its own, not torch's AveragedModel: that one copies its update count to the device at every step, a sync per
    step on a GPU; here the count is a Python int and each step is one foreach update of the floats."""

    def __init__(self, model, decay):
        self.module, self.decay, self.n = copy.deepcopy(model), decay, 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update_parameters(self, model):
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()], [*model.parameters(), *model.buffers()]))
        if self.n == 0:
            for a, c in pairs:
                a.copy_(c)
        else:
            d = min(self.decay, (1 + self.n) / (10 + self.n))
            floats = [(a, c) for a, c in pairs if a.is_floating_point()]
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)  # as torch's own EMA
            for a, c in pairs:
                if not a.is_floating_point():  # BatchNorm's batch counts
                    a.copy_(a + (c - a) * (1 - d))
        self.n += 1

    def state_dict(self):
        return {"module": self.module.state_dict(), "n": self.n}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"])
        self.n = int(state["n"])
