"""Which student to deploy: the front of accuracy against latency, and the recommendation.

A student is on the front when no other beats it on both: at least as accurate (kd_best's mean test accuracy)
and at least as fast (median latency at batch 1), better in one. The recommendation is the smallest student on
the front (the fewest parameters; then the fastest) whose accuracy is within `within` points of the best one's:
the accuracy a user would give up for a smaller model, set by the study (report.within), not guessed.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One student as the front compares it: its spec, parameters, batch-1 latency (ms) and test accuracy (%)."""
    spec: str
    params: int
    latency_ms: float
    accuracy: float

    def beats(self, other):
        """At least as accurate and as fast as `other`, and better in one."""
        return (self.accuracy >= other.accuracy and self.latency_ms <= other.latency_ms
                and (self.accuracy > other.accuracy or self.latency_ms < other.latency_ms))


def front(candidates):
    """The specs of the candidates that no other beats, fastest first."""
    kept = [c for c in candidates if not any(o.beats(c) for o in candidates if o is not c)]
    return [c.spec for c in sorted(kept, key=lambda c: (c.latency_ms, -c.accuracy))]


def recommend(candidates, within):
    """The smallest candidate on the front within `within` points of the most accurate one (ties: the faster);
    one that another beats on both accuracy and latency is never recommended, however small."""
    best, on_front = max(c.accuracy for c in candidates), set(front(candidates))
    return min((c for c in candidates if c.spec in on_front and c.accuracy >= best - within),
               key=lambda c: (c.params, c.latency_ms))
