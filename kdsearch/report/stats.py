"""Seed-to-seed statistics for the report: means, standard deviations and Welch's interval for a difference.

Plain Python plus scipy's t quantiles; no torch. The unit is the accuracy in percent, so differences are in
points."""
import math
import statistics


def mean_sd(values):
    """(mean, sample standard deviation), sd None for a single value."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def welch(a, b, level=0.95):
    """Difference of means mean(a) - mean(b) and its Welch (unpaired, unequal variances) confidence interval.

    The interval is diff ± t_{(1+level)/2, df} * sqrt(var_a/n_a + var_b/n_b), df by Welch-Satterthwaite. Needs
    two values or more on each side; when both sides have no spread the interval is the difference itself.
    """
    from scipy.stats import t as student_t
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least two values on each side")
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, (diff, diff)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = student_t.ppf((1 + level) / 2, df) * se
    return diff, (diff - half, diff + half)


def verdict(names, diff, ci, seeds):
    """The comparison in words, e.g. "kd_best beats student_ce by 2.0 points (95 % CI +1.2 to +2.8, 3 seeds
    each)"; "no significant difference" when the interval holds 0. names: (a, b); seeds: how many each has."""
    (a_name, b_name), span = names, _span(ci, seeds)
    if ci[0] > 0:
        return f"{a_name} beats {b_name} by {diff:.1f} points ({span})"
    if ci[1] < 0:
        return f"{a_name} trails {b_name} by {-diff:.1f} points ({span})"
    return f"{a_name}: no significant difference from {b_name} ({diff:+.1f} points, {span})"


def control_verdict(diff, ci, seeds, trials):
    """kd_best against ce_best in words: whether distillation pays over a CE student tuned with the same
    `trials` trials, e.g. "distillation adds +1.4 points over a CE student tuned with the same 40 trials (95 % CI
    +0.6 to +2.2, 3 seeds each)"."""
    span, budget = _span(ci, seeds), f"a CE student tuned with the same {trials} trials"
    if ci[0] > 0:
        return f"distillation adds {diff:+.1f} points over {budget} ({span})"
    if ci[1] < 0:
        return f"distillation loses {-diff:.1f} points to {budget} ({span}): here a tuned CE student is better"
    return (f"no significant gain over {budget} ({diff:+.1f} points, {span}): here a tuned CE student does as "
            f"well")


def _span(ci, seeds):
    n_a, n_b = seeds
    span = f"95 % CI {ci[0]:+.1f} to {ci[1]:+.1f}, " + (f"{n_a} seeds each" if n_a == n_b else f"{n_a} and {n_b} seeds")
    if ci[0] == ci[1]:
        span += "; no spread over seeds on either side, so the interval is a point"
    return span


def mean_interval(values, level=0.95):
    """The t interval of the mean of `values` (for the plot); None for a single value."""
    from scipy.stats import t as student_t
    if len(values) < 2:
        return None
    m, sd = mean_sd(values)
    half = student_t.ppf((1 + level) / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return m - half, m + half
