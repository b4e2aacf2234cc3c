"""Names every layer shares, in one place (no imports: presentation reads them too)."""
BASELINES = ("student_mse", "student_ce", "kd_reference")  # the fixed baselines, in the report's order; the
# fields of schema.Baselines
CONFIRMED = ("student_ce", "kd_reference")  # the baselines re-trained on every seed and compared with kd_best
ROLES = ("teacher", "student")  # a study's two networks (schema.Models' fields, models.MODELS' names)
# the training levers' values that change nothing: a recipe holding them keeps the cache key it had before they
# existed, so runs stored then are not trained again (schema.key_fields), and a run's name leaves them out
NEUTRAL = {"nesterov": False, "warmup_epochs": 0, "ema": None, "label_smoothing": 0.0, "grad_clip": None,
           "mix": "none"}
METRIC, MODE = "val_acc", "max"  # what the search maximises: the searcher's and the scheduler's objective
ARMS = {"kd": "kd_reference", "ce": "student_ce"}  # a search's arms (the KD search, the CE control arm), each with
# the baseline whose recipe every trial of it starts from (its first trial is that baseline's own run)
BEST = {"kd": "kd_best", "ce": "ce_best"}  # each arm's confirmed winner: a row of the report
