"""What the GPU check's sections share: their result, the relative error
they compare with, seeded random parameters and autocast by dtype."""
from contextlib import nullcontext
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

#: a section's result: ``{'ok': bool | None, ...}`` (None: skipped, with a
#: ``skipped`` reason)
Result = Dict[str, object]


def skipped(why: str) -> Result:
    """A section's result when it cannot run here, saying ``why``."""
    return dict(ok=None, skipped=why)


def randomize(module: nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Every parameter random (norm weights near 1), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_scale = 'norm' in name and name.endswith('weight')
            p.copy_(torch.randn(p.shape, generator=g) * std + is_scale)


def rel_error(a: Tensor, b: Tensor) -> float:
    """``|a - b| / |b|`` over all elements, in float64."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``; none for None."""
    return torch.autocast(device.type, dtype=dtype) if dtype else \
        nullcontext()
