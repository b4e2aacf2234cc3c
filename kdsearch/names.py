"""Names every layer shares, in one place (no imports: presentation reads them too)."""
BASELINES = ("student_mse", "student_ce", "kd_reference")  # the fixed baselines, in the report's order; the
# fields of config.Baselines
CONFIRMED = ("student_ce", "kd_reference")  # the baselines re-trained on every seed and compared with kd_best
ROLES = ("teacher", "student")  # a study's two networks (config.Models' fields, models.MODELS' names)
