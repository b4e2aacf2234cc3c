"""Every access to the private state of Ray's OptunaSearch, in one place.

Ray's OptunaSearch has no public API for two things kdsearch needs: the Optuna trial behind a Tune trial (its
number, which names the trial across resumes) and telling Optuna a state other than COMPLETE (it reports an
ASHA-stopped trial as COMPLETE with its early score). Both read its attributes `_ot_trials` (Tune trial id ->
optuna.Trial), `_ot_study` and `_completed_trials`. They are private, so they may change with any Ray release:
WRITTEN_FOR is the Ray version they were read from, and a test fails when another version is installed."""
WRITTEN_FOR = "2.60"  # ray/tune/search/optuna/optuna_search.py of this release


def optuna_number(searcher, trial_id):
    """The Optuna trial number behind Tune trial `trial_id`, or None when the searcher holds no such trial."""
    trial = searcher._ot_trials.get(trial_id)
    return None if trial is None else trial.number


def tell_once(searcher, trial_id, state):
    """Tell Optuna that Tune trial `trial_id` ended in `state` (an optuna TrialState), once; returns False when
    there is nothing to tell (unknown, or already told), and the caller leaves it to OptunaSearch."""
    if trial_id not in searcher._ot_trials or trial_id in searcher._completed_trials:
        return False
    searcher._ot_study.tell(searcher._ot_trials[trial_id], state=state)
    searcher._completed_trials.add(trial_id)
    return True
