"""Mona (Yin et al., *5%>100%: Breaking Performance Shackles of Full
Fine-Tuning on Visual Recognition Tasks*, CVPR 2025), the peer adapter
MSLoRA is compared with, as published (reference code: Leiyi-Hu/mona).

``x + Up(Dropout(GELU(P(M(z)))))`` with ``z = Down(LN(x) * g + x * gx)``,
``M(z) = mean(DW3(z), DW5(z), DW7(z)) + z`` (depthwise) and
``P(y) = y + Conv1x1(y)``: the multi-scale depthwise convolutions are added
to the feature's bottleneck, where MSLoRA multiplies (reweights) with them.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .mslora import ADAPTER_NAME, LayerNorm2d, SiteAdapter, _check


class Mona(SiteAdapter):
    """The Mona adapter at a site, applied as ``x + H(x)``.

    Initialised as the reference code does: ``g = 1e-6``, ``gx = 1``; the
    down and up projections (the reference's ``nn.Linear``, here 1x1
    convolutions) truncated normal with std 0.02 and zero bias, as its
    backbone's ``init_weights`` does for every linear layer; the depthwise
    and projector convolutions and the LayerNorm with PyTorch's default
    init. Unlike MSLoRA (zero ``Up``), it is therefore not exactly the
    identity at init, only close to it.

    Args:
        in_channels (int): C, channels of the adapted feature.
        rank (int): width of the bottleneck. Defaults to 64 (published).
        kernel_sizes (Sequence[int]): depthwise kernel sizes of ``M``.
            Defaults to (3, 5, 7).
        dropout (float): dropout before ``Up``. Defaults to 0.1.
        site (str, optional): where the adapter sits, for error messages.

    Shapes:
        ``(B, C, H, W)`` maps, or ``(B, N, C)`` tokens with ``hw_shape``;
        the output has the input's shape.
    """
    _abbr_ = ADAPTER_NAME  # the plugin's name in mmdet's ResNet blocks

    def __init__(self,
                 in_channels: int,
                 rank: int = 64,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 dropout: float = 0.1,
                 site: Optional[str] = None) -> None:
        super().__init__()
        where = f'in_channels={in_channels}' + (f' at {site}' if site else '')
        kernel_sizes = tuple(kernel_sizes)
        _check(isinstance(rank, int) and rank >= 1,
               f'rank={rank!r} must be an int >= 1', where, 'Mona')
        _check(len(kernel_sizes) > 0 and all(
            isinstance(k, int) and k >= 1 and k % 2 == 1
            for k in kernel_sizes),
               f'kernel_sizes={kernel_sizes} must be odd ints >= 1', where,
               'Mona')
        self.in_channels = in_channels
        self.rank = rank
        self.kernel_sizes = kernel_sizes
        self.norm = LayerNorm2d(in_channels)
        self.gamma = nn.Parameter(torch.full((in_channels, ), 1e-6))
        self.gammax = nn.Parameter(torch.ones(in_channels))
        self.down = nn.Conv2d(in_channels, rank, 1)
        self.dw = nn.ModuleList(
            nn.Conv2d(rank, rank, k, padding=k // 2, groups=rank)
            for k in kernel_sizes)
        self.projector = nn.Conv2d(rank, rank, 1)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Conv2d(rank, in_channels, 1)
        self.reset_projections()

    def reset_projections(self) -> None:
        """The reference's init of its linear down/up projections."""
        for conv in (self.down, self.up):
            nn.init.trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)

    def init_weights(self) -> None:
        """The reference init (see the class docstring), not mmengine's."""
        for m in (self.norm, self.projector, *self.dw):
            m.reset_parameters()
        self.reset_projections()
        self.is_init = True

    def projection_parameters(self) -> Tuple[nn.Parameter, ...]:
        """Parameters of the down and up projections."""
        return (*self.down.parameters(), *self.up.parameters())

    def delta(self, f: Tensor) -> Tensor:
        """``H(F)``: ``(B, C, H, W) -> (B, C, H, W)``."""
        scale = self.gamma.view(1, -1, 1, 1)
        z = self.down(self.norm(f) * scale + f * self.gammax.view(1, -1, 1, 1))
        m = sum(dw(z) for dw in self.dw) / len(self.dw) + z
        p = m + self.projector(m)
        return self.up(self.dropout(F.gelu(p)))

    def residual(self, x: Tensor,
                 hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        if x.dim() == 4:
            return self.delta(x)
        if hw_shape is None:
            raise ValueError('Mona: token input (B, N, C) needs '
                             'hw_shape=(H, W)')
        (b, _, c), (height, width) = x.shape, hw_shape
        return self.delta(x.transpose(1, 2).reshape(b, c, height, width))

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, rank={self.rank}, '
                f'kernel_sizes={self.kernel_sizes}')
