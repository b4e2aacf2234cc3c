"""What a student costs to deploy, measured rather than guessed: its parameters, its FLOPs per image at the
study's image size, and the inference latency of the program a user deploys.

FLOPs are torch.utils.flop_counter's count of one forward pass at batch 1 (a multiply-add is 2 FLOPs, as there;
convolutions and matrix products only: activations, pooling and normalisation are not counted), not a hand count.
Latency is the median wall time of `repeats` calls after `warmup` ones, on inputs of batch 1 and 64, synchronised
on a GPU: the median, not the mean, because a 2-core machine's other work lands as rare long outliers.
"""
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.engine.models import count_params

BATCHES = (1, 64)  # the latencies measured: one image (an interactive call) and a batch (offline scoring)


@dataclass(frozen=True)
class Cost:
    """A student's cost: parameters, FLOPs per image, median latency in ms at batch 1 and 64, and where and how
    the latency was measured (the device's name, the CPU threads, the repeats)."""
    params: int
    flops: int
    latency_ms_b1: float
    latency_ms_b64: float
    device: str
    threads: int
    repeats: int


def flops_per_image(model, image_size):
    """FLOPs of one forward pass of `model` on one image of `image_size` (H, W), in eval mode, on its device."""
    model = model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, *image_size, device=next(model.parameters()).device))
    return int(counter.get_total_flops())


def latency_ms(program, batch, image_size, device, repeats=20, warmup=3):
    """Median milliseconds of `program` (any callable on (N, 3, H, W) float images, e.g. an exported student's
    module) on a batch of `batch` images of `image_size` on `device`."""
    x = torch.rand(batch, 3, *image_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            program(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure_cost(model, program, image_size, device, device_name, repeats=20):
    """The Cost of a student: `model` its network (parameters, FLOPs), `program` what deploys it (latency)."""
    lat = [latency_ms(program, b, image_size, device, repeats) for b in BATCHES]
    return Cost(count_params(model), flops_per_image(model, image_size), lat[0], lat[1],
                device_name, torch.get_num_threads(), repeats)
