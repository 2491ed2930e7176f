"""The measures every cost tool shares, with PyTorch alone: the one timer
(CUDA events on CUDA), the FLOP count of a forward, and the fixed random
images every mode runs on."""
import time
from typing import Callable

import torch
from torch import Tensor


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes (CUDA events on CUDA)."""
    if device.type == 'cuda':
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_gflop(forward: Callable[[], object]) -> float:
    """The arithmetic of ``forward()`` (no gradients) in GFLOP: 2 per
    multiply-add of its convolutions and matmuls (grouped ones included),
    as torch's ``FlopCounterMode`` counts them. Adapters count with
    PyTorch's layers: the counter cannot see inside the native kernel (the
    runtime's ``kernel='native'``), which does the same arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    from ...core.runtime import runtime
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, runtime(kernel='stock'):
        forward()
    return counter.get_total_flops() / 1e9


def seeded_images(batch: int, img_size: int,
                  device: torch.device) -> Tensor:
    """``(batch, 3, img_size, img_size)`` fixed random images (seed 0) on
    ``device``: the same inputs in every mode and run."""
    return torch.randn(batch, 3, img_size, img_size,
                       generator=torch.Generator().manual_seed(0)).to(device)
