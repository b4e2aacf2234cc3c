"""Which student to deploy (issue 28's pieces): a student's cost measured (engine/cost.py) and the front of
accuracy against latency with the recommendation (report/front.py)."""
import random

import torch
import torch.nn as nn

from kdsearch.engine.cost import flops_per_image, measure_cost
from kdsearch.report.front import Candidate, front, recommend
from kdsearch.tools.export import deployable


def small_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10))


def test_flops_are_the_hand_count_and_latency_is_measured_on_the_exported_program():
    # a convolution's output elements x its inputs per output, a multiply-add counted as 2; the same for the
    # linear layer (biases, ReLU and pooling are not counted)
    hand = 2 * (8 * 8 * 8) * (3 * 3 * 3) + 2 * (8 * 4 * 4) * 10
    model = small_net()
    assert flops_per_image(model, (8, 8)) == hand
    assert flops_per_image(small_net(), (8, 8)) == hand  # weights do not matter, the shape does
    program = deployable(model, (0.5,) * 3, (0.25,) * 3, (8, 8)).module()
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(program(x), model.eval()((x - 0.5) / 0.25))  # the normalisation folded in
    cost = measure_cost(model, program, (8, 8), torch.device("cpu"), "cpu: test", repeats=5)
    assert cost.params == 8 * 3 * 9 + 8 + 128 * 10 + 10 and cost.flops == hand and cost.repeats == 5
    assert 0 < cost.latency_ms_b1 < cost.latency_ms_b64  # 64 images take longer than one


def brute_front(candidates):
    """The front by a sweep: fastest first, each kept when more accurate than every faster one kept."""
    kept, best = [], float("-inf")
    for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.accuracy)):
        if c.accuracy > best:
            kept.append(c.spec)
            best = c.accuracy
    return kept


def test_the_front_equals_a_brute_force_front_and_the_recommendation_is_the_smallest_within_the_margin():
    rng = random.Random(0)
    for n in range(1, 30):
        cands = [Candidate(f"s{i}", rng.randint(1, 100) * 1000, rng.uniform(0.5, 9), rng.uniform(50, 90))
                 for i in range(n)]
        assert front(cands) == brute_front(cands)
    a = Candidate("large", 5_000_000, 9.0, 80.0)
    b = Candidate("small", 1_500_000, 2.1, 79.2)
    c = Candidate("slow_small", 1_000_000, 12.0, 70.0)
    assert front([a, b, c]) == ["small", "large"]  # slow_small: small beats it on both
    assert recommend([a, b, c], within=1.0) == b  # within a point of the best, and the fewest parameters
    assert recommend([a, b, c], within=0.5) == a
    assert recommend([a, b, c], within=20.0) == b  # slow_small is smaller, but small beats it on both
