"""A search's arms (space.Arm: the KD search and the CE control arm), one Tune run each, and what drives them:
the search's record, its MLflow tracker, --resume and the stages' clocks."""
import contextlib
import dataclasses
import time

from kdsearch.core.errors import UserError
from kdsearch.core.records import COMPLETED
from kdsearch.phase.trial import StoredTrial
from kdsearch.search.searcher import make_searcher
from kdsearch.search.state import SearchState
from kdsearch.search.tune_callback import trial_callback
from kdsearch.search.tuner import build_tuner, collect_trials, fit
from kdsearch.study.space import first_point, space_epochs


@dataclasses.dataclass
class Driver:
    """What drives a search's arms: its record (state.SearchState), its MLflow tracker, --resume, the stages'
    clocks (timed), where progress lines go, and each arm's search seconds ({arm: s})."""
    state: SearchState
    tracker: object
    resume: bool
    took: dict
    log: object
    arm_s: dict = dataclasses.field(default_factory=dict)


def search_arms(ctx, phase, arms, job, driver):
    """Each arm's search (space.Arm), one Tune run each, the KD search first: `job` (a TuneJob) made the arm's
    (its baseline's recipe and stored run, its longest trial). An arm that finished before an interruption is
    read back on resume (search.json's arms_done). Returns the Trials of every arm; driver.took gets the
    seconds (search_s), driver.arm_s each arm's. With several students, job.student names the one searched (its
    label): its arms are its own in Tune's folders, MLflow and arms_done; each Trial carries its student's spec."""
    trials, label = [], job.student
    for arm in arms:
        name = arm.name if label is None else f"{label}/{arm.name}"  # a student's arms are its own
        record = driver.state.write(stage=f"the {name} search")
        mine = dataclasses.replace(job, arm=arm.name, base=dataclasses.asdict(arm.base),
                                   reuse=stored_trial(ctx, phase, arm), max_epochs=space_epochs(arm.space, arm.base))
        with timed(driver.took, "search_s"), timed(driver.arm_s, arm.name):
            done = driver.resume and name in record.get("arms_done", [])
            trials += [dataclasses.replace(t, student=ctx.networks.student.spec)
                       for t in search_trials(arm, mine, ctx.study.search, driver, done)]
        driver.state.write(arms_done=list(dict.fromkeys([*record.get("arms_done", []), name])))
        driver.tracker.end_lost_and_running({t.trial_id for t in trials}, "KILLED", arm.name, label)
    return trials


def search_trials(arm, job, search, driver, done):
    """One arm's search (a space.Arm): Tune's trials of `job` (a TuneJob) as records, each mirrored into MLflow
    by driver.tracker; done: the arm finished before an interruption, its trials are read back, nothing runs. A
    UserError when none of them completed. Both arms get the same searcher, seed, trial count and scheduler
    (`search`, the study's running.Search)."""
    first = first_point(arm.space, arm.base, driver.log, arm.baseline)
    tuner = build_tuner(job, make_searcher(arm.space, search.seed, first), search,
                        [trial_callback(driver.tracker, list(arm.space), driver.log, arm.name, job.student)], driver.resume)
    trials = collect_trials(tuner.get_results() if done else fit(tuner), list(arm.space), arm.name)
    if not any(t.state == COMPLETED for t in trials):
        raise UserError(f"none of the {len(trials)} trials of the {arm.name} arm completed; fix: read the trials' "
                        f"errors in {job.folder / 'trials.csv'} and {job.path}/*/error.txt")
    return trials


def stored_trial(ctx, phase, arm):
    """The StoredTrial of the arm's baseline (its stored run of the study's seed), which the arm's trial at that
    very recipe is; None when the store lost it (the trial then trains it again)."""
    run = phase.baselines[arm.baseline]
    stored = ctx.store.load_run("runs", run.key)
    return None if stored is None else StoredTrial(run.model, dataclasses.asdict(arm.base), run.history, stored.state)


@contextlib.contextmanager
def timed(took, key):
    """Add the seconds the block took to took[key]."""
    start = time.time()
    yield
    took[key] = took.get(key, 0.0) + time.time() - start
