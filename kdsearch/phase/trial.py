"""One search trial (or confirmation run) as a plain function call (`run_trial`), its data and its checkpoint.
Its record and the rule for how it ended are core.records' (no torch: the report and the searcher read them).

A trial is a training of the student by a recipe (kd_reference's, with the searched values), each epoch
handed to a report callback; a confirmation run is the same with another seed. No Ray here: tuner.py and
confirm.py call it in Ray's workers."""
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from kdsearch.data.dataset import to_split
from kdsearch.engine.loop import Lesson, RunState, new_model, set_threads, train
from kdsearch.engine.losses import NEEDS_TEACHER
from kdsearch.engine.networks import Networks

CHECKPOINT = "trial.pt"  # a trial's whole training state, in its checkpoint folder


@dataclass(frozen=True)
class TrialData:
    """Everything a trial needs but its recipe and seed, handed to Ray as one object. Numpy, not torch: Ray puts
    the arrays into its object store once and every trial reads them zero-copy (read-only); a tensor would be
    copied into each trial process."""
    train_x: np.ndarray  # uint8 (N, H, W, 3)
    train_y: np.ndarray  # int64 (N,)
    val_x: np.ndarray
    val_y: np.ndarray
    logits: dict  # {mix: the teacher's (epochs, N, classes) logit table of those views}, per Recipe.mix searched
    networks: Networks  # the study's teacher and student (a user's file arrives through Ray's runtime env)
    views: dict  # {mix: augment.Views} for each Recipe.mix: the study's views (its seed included), mixed
    device: str = "cpu"  # where a trial trains
    threads: int = 1  # torch CPU threads per trial: its CPUs

    @property
    def seed(self):
        """The study's seed, which fixes its views."""
        return next(iter(self.views.values())).seed


def save_state(state, folder):
    """A trial's training state (a loop.RunState) into its checkpoint folder."""
    torch.save(state.to_dict(), os.path.join(folder, CHECKPOINT))


def load_state(folder, device="cpu"):
    """A trial's training state (a loop.RunState) from its checkpoint folder."""
    return RunState(**torch.load(os.path.join(folder, CHECKPOINT), map_location=device, weights_only=True))


@dataclass(frozen=True)
class StoredTrial:
    """A baseline's stored run of the study's seed, which a trial at that baseline's very recipe is, instead of a
    second training of it: one recipe and seed give one result (a training in a one-thread Ray worker gives other
    floats than the baseline's in the driver)."""
    name: str  # the baseline's: kd_reference, student_ce
    recipe: dict  # its schema.Recipe, as a dict
    history: list
    state: dict  # its model's state_dict, on the CPU

    def matches(self, recipe):
        """Whether a trial of `recipe` (a schema.Recipe; trials train with the study's seed, as it did) is this
        very run."""
        return dataclasses.asdict(recipe) == self.recipe


def replay(stored, report, resume=None):
    """A trial that is the StoredTrial `stored`: its epochs handed to report(metrics, state) as run_trial hands
    a training's (`reused` names the baseline), the last one's state holding the stored weights; a restarted
    trial (`resume`) goes on after the epochs it reported."""
    start = time.time()
    for i in range(len(resume.history) if resume else 0, len(stored.history)):
        def state(i=i):
            return RunState(model=stored.state, optimizer={}, order=torch.Generator().get_state(), scheduler=None,
                            history=stored.history[:i + 1])
        report({**stored.history[i], "epochs": stored.recipe["epochs"], "train_start": start, "wall": time.time(),
                "reused": stored.name}, state)


def run_trial(recipe, data, seed, report=None, resume=None):
    """Train a model by `recipe` (a schema.Recipe) on `data` (TrialData); return (history, model).

    seed: initialisation and batch order (the views stay the study's). report(metrics, state) is called
    after every epoch; metrics are the engine's plus `epochs` (what the recipe asked for: see `trial_state`),
    `train_start` and `wall` (time.time(), for the search's timings); state() is the run's whole state
    (loop.train), and `resume` such a state to go on from.
    """
    set_threads(data.threads)
    device = torch.device(data.device)
    with warnings.catch_warnings():  # object-store arrays are read-only; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        train_split, val_split = to_split(data.train_x, data.train_y, device), to_split(data.val_x, data.val_y, device)
        # this run's table alone, when it reads one (a CE baseline of the confirmation does not)
        table = torch.from_numpy(data.logits[recipe.mix]).to(device) if recipe.loss in NEEDS_TEACHER else None
    model = new_model(data.networks, recipe.model, seed, device, start=resume is None)
    start = time.time()

    def on_epoch(m, state):
        if report is not None:
            report({**m, "epochs": recipe.epochs, "train_start": start, "wall": time.time()}, state)

    history = train(model, recipe, Lesson(train_split, data.views[recipe.mix], val_split, table), seed=seed,
                    report=on_epoch, resume=resume)
    return history, model
