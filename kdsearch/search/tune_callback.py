"""The Tune callback, in the driver, that mirrors each trial into its MLflow child run (tracker.Tracker) and
prints its epochs."""
from pathlib import Path

from kdsearch.core.errors import first_line
from kdsearch.core.records import FAILED, trial_state
from kdsearch.report.tables import recipe_label
from kdsearch.search.searcher import NUMBER


def _short(value):
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def trial_callback(tracker, space_names, log, arm="kd", student=None):
    """A Tune callback, in the driver, that mirrors each trial of the arm `arm` (kd, ce) into an MLflow child run
    named and tagged by its arm (and its student's label `student`, with several), and prints its epochs. A
    trial's final state comes from its last result by records.trial_state, the rule the searcher follows too."""
    from ray import tune
    who = f"{student} " if student else ""

    class TrackTrials(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            params = {k: v for k, v in trial.config.items() if k in space_names}
            number = trial.config.get(NUMBER, trial.trial_id)  # Optuna's number, as the report's trials
            tracker.start_trial(trial.trial_id, f"{who}{arm} trial {number} · {recipe_label(params)}", params, arm,
                                student)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tracker.log_epoch(trial.trial_id, result["epoch"], result)
            log(f"{who}{arm} trial {trial.trial_id}: epoch {result['epoch']}/{result['epochs']} "
                f"val {result['val_acc']:.2f}% "
                + " ".join(f"{k}={_short(trial.config[k])}" for k in space_names if k in trial.config)
                + (" DIVERGED (loss NaN or infinite): stopped" if result.get("diverged") else "")
                + (f" ({result['reused']}'s stored run)" if result.get("reused") else ""))

        def on_trial_complete(self, iteration, trials, trial, **info):
            tracker.end_trial(trial.trial_id, trial_state(trial.last_result))

        def on_trial_recover(self, iteration, trials, trial, **info):
            tracker.count_failures(trial.trial_id, trial.num_failures)
            log(f"{who}{arm} trial {trial.trial_id}: failed ({_error(trial)}); retrying from its last checkpoint "
                f"({trial.num_failures} failure(s) so far)")

        def on_trial_error(self, iteration, trials, trial, **info):
            tracker.count_failures(trial.trial_id, trial.num_failures)
            log(f"{who}{arm} trial {trial.trial_id}: failed ({_error(trial)}) after {trial.num_failures} tries; the search "
                f"goes on")
            tracker.end_trial(trial.trial_id, FAILED, _error(trial))

    return TrackTrials()


def _error(trial):
    return error_line(trial.error_file)


def error_line(error_file):
    """The first failure's error, one line, from a Tune trial's error file. Its layout is Ray 2.60's
    (ray/tune/experiment/trial.py, handle_error): each failure is a header "Failure # N (occurred at ...)"
    followed by its traceback; tests/test_searcher.py reads a real one, so a Ray that changes it fails there."""
    try:
        text = Path(error_file).read_text().split("Failure #")[1]  # the first failure
        return first_line(text.split("\n", 1)[1], 300)
    except (OSError, TypeError, IndexError):
        return "unknown error"
