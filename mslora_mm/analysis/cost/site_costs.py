"""What each adapter of a backbone costs on its own: the profile behind a
choice of sites and ranks (``tools/analysis/benchmark.py --per-site``;
docs/benchmarks.md)."""
import statistics
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...core.mslora import SiteAdapter, adapter_modules
from .measure import forward_gflop, seeded_images, timed


@dataclass
class SiteCost:
    """One adapter's train step alone: ``site`` (its host module), the
    feature's ``channels`` and ``hw``, the adapter's ``rank`` (None for
    adapters without one), the median ``step_ms`` (forward and backward,
    the input's gradient included, as inside a backbone) and the ``gflop``
    of its forward (2 per multiply-add of its convolutions)."""
    site: str
    channels: int
    rank: Optional[int]
    hw: Tuple[int, int]
    step_ms: float
    gflop: float


def _inputs(backbone: nn.Module, images: Tensor) -> List[tuple]:
    """``(host name, adapter, input, hw_shape)`` of every adapter in one
    forward of ``backbone`` on ``images`` (no gradients)."""
    seen = []
    adapters = [(name.rpartition('.')[0], a)
                for name, a in adapter_modules(backbone)]

    def record(site, adapter, args):
        hw = args[1] if len(args) > 1 else None
        seen.append((site, adapter, args[0].detach().clone(), hw))

    handles = [a.register_forward_pre_hook(
        lambda m, args, s=site: record(s, m, args)) for site, a in adapters]
    try:
        with torch.no_grad():
            backbone(images)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _step(adapter: SiteAdapter, x: Tensor,
          hw: Optional[Tuple[int, int]]) -> None:
    out = adapter(x, hw)
    out.float().square().mean().backward()


def adapter_site_costs(backbone: nn.Module, images: Tensor, iters: int = 3,
                       warmup: int = 1) -> List[SiteCost]:
    """The cost of every adapter of ``backbone`` (a backbone with
    adapters) on the features ``images`` give it, in forward order: each
    adapter trained alone (train mode, the runtime's settings) for
    ``warmup`` + ``iters`` steps on a copy of its input that requires
    grad, loss ``mean(out ** 2)``."""
    costs = []
    device = images.device
    for site, adapter, x, hw in _inputs(backbone, images):
        was_training = adapter.training
        adapter.train()
        leaf = x.requires_grad_()
        times = [timed(lambda: _step(adapter, leaf, hw), device)
                 for _ in range(warmup + iters)][warmup:]
        adapter.zero_grad(set_to_none=True)
        adapter.train(was_training)
        gflop = forward_gflop(lambda: adapter(x.detach(), hw))
        grid = tuple(hw) if hw is not None else tuple(x.shape[2:])
        costs.append(SiteCost(site, adapter.in_channels,
                              getattr(adapter, 'rank', None), grid,
                              1000 * statistics.median(times), gflop))
    return costs


def config_site_costs(config: str, cfg_options: Optional[dict] = None,
                      img_size: int = 512, batch: int = 2, iters: int = 3,
                      warmup: int = 1) -> List[SiteCost]:
    """:func:`adapter_site_costs` of the backbone of ``config`` (built
    without weights) on ``batch`` random images of ``img_size``, on CUDA if
    there is one."""
    from ...cli import load_config
    from ...models.peft_lora import build_without_weights
    cfg = load_config(config, cfg_options)
    torch.manual_seed(0)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    backbone = build_without_weights(cfg.model.backbone).to(device)
    costs = adapter_site_costs(backbone, seeded_images(batch, img_size, device),
                               iters, warmup)
    if not costs:
        raise ValueError(f'{config}: the backbone has no adapters')
    return costs


def format_site_costs(costs: List[SiteCost]) -> str:
    """A Markdown table, one row per site, and the total."""
    total = sum(c.step_ms for c in costs) or 1.0
    lines = ['| site | C | D | H x W | train step (ms) | share | GFLOP |',
             '|---|---|---|---|---|---|---|']
    for c in costs:
        lines.append(f'| {c.site} | {c.channels} | {c.rank} | '
                     f'{c.hw[0]} x {c.hw[1]} | {c.step_ms:.1f} | '
                     f'{100 * c.step_ms / total:.0f}% | {c.gflop:.3f} |')
    lines.append(f'| all {len(costs)} | | | | '
                 f'{sum(c.step_ms for c in costs):.1f} | 100% | '
                 f'{sum(c.gflop for c in costs):.3f} |')
    return '\n'.join(lines)
