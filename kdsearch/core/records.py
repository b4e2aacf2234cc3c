"""The plain records every layer reads: a trained model's row (Run), a search trial's (Trial), the four ways a
trial ends and the one rule that tells them apart, and the names of a run's per-epoch curves. No torch: the
report, MLflow's layer and the searcher read these without the engine."""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

# how a trial ended (trial_state): the values of Trial.state, the MLflow tag kdsearch.state and report.json's
COMPLETED, PRUNED, DIVERGED, FAILED = "completed", "pruned", "diverged", "failed"
TRIAL_STATES = (COMPLETED, PRUNED, DIVERGED, FAILED)


@dataclass
class Run:
    """A trained model's record: the one row schema of the store, baselines.json and the confirmation."""
    model: str  # its name: teacher, student_ce, trial_3, ...
    key: str  # its store key
    params: int  # parameter count
    val_acc: float
    test_acc: float  # measured once, right after training; nothing is ever chosen by it
    train_s: float
    history: list  # per epoch: the engine's metrics
    config: dict  # its recipe
    seed: Optional[int] = None  # initialisation and batch order (None: a row stored before it was recorded)
    start: Optional[dict] = None  # {val_acc, test_acc} of its starting weights before training (pretrained or init)
    cached: bool = field(default=False, compare=False)  # read back from the store, not trained now

    def to_json(self):
        return {k: v for k, v in vars(self).items()
                if k != "cached" and not (k in ("seed", "start") and v is None)}

    @classmethod
    def from_json(cls, row, cached=False):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known}, cached=cached)


ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Run) if f.name != "cached")  # a row in baselines.json


@dataclass
class Trial:
    """A search trial's record, as report.json and trials.csv hold it (`checkpoint` aside)."""
    number: int  # Optuna's trial number
    trial_id: Optional[str]  # Tune's
    state: str  # trial_state: completed, pruned, diverged or failed
    error: Optional[str]  # a failed trial's error, one line
    params: dict  # the searched values
    val_acc: Optional[float]  # the last epoch's
    epochs_run: int
    train_s: float
    train_start: Optional[float]  # time.time() at its start and its last epoch, for the search's timings
    train_end: Optional[float]
    history: list = field(default_factory=list)  # per epoch: epoch, val_acc, train_loss, loss_<part>
    restarts: list = field(default_factory=list)  # the epoch each restart went on from (tuner._restarts)
    checkpoint: Optional[str] = field(default=None, repr=False)  # its last checkpoint's folder (not reported)
    arm: str = "kd"  # the search's arm it belongs to: kd, or ce (the control arm; names.ARMS)
    reused: Optional[str] = None  # the baseline whose stored run it is (a trial at that baseline's own recipe)
    student: Optional[str] = None  # the spec of the student it trains

    def to_json(self):
        return {k: v for k, v in vars(self).items() if k != "checkpoint"}


def trial_state(result, error=False):
    """The one rule for how a trial ended, from its last result: failed (it raised, or reported nothing),
    diverged (its loss became NaN or infinite), pruned (a scheduler stopped it: it ran fewer epochs than its
    config asked for, and a trial that ends on its own reaches its last epoch) or completed."""
    if error or not result:
        return FAILED
    if result.get("diverged"):
        return DIVERGED
    return PRUNED if result.get("epoch", 0) < result.get("epochs", 0) else COMPLETED


def curve_names(metrics):
    """The per-epoch curves of a run, from one epoch's metrics (train's report): what MLflow and the report
    keep of each epoch besides its number."""
    return ["val_acc", "train_loss"] + sorted(k for k in metrics if k.startswith("loss_"))
