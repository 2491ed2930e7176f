"""The activation-free frozen version of mmdet's Swin window attention, and
the mmcv layers the core's frozen layers stand for."""
from typing import Optional

import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
from torch import Tensor
from torch.nn.attention import sdpa_kernel

from mmdet.models.backbones.swin import WindowMSA
from ..core.freezing import add_stochastic_layer
from ..core.frozen_layers import (CUDA_SDPA_BACKENDS, FrozenConv2d,
                                  FrozenLinear, Restorable, add_frozen_layer,
                                  needs_input_grad_only)


class FrozenWindowMSA(Restorable, WindowMSA):
    """mmdet's Swin window attention with frozen weights, computed by
    ``scaled_dot_product_attention`` (CPU: a flash kernel) with the relative
    position bias and the shift mask as its additive mask: autograd keeps
    queries, keys, values, output and a ``(1, nW * heads, N, N)`` mask
    instead of the ``(B * nW, heads, N, N)`` attention, and no attention
    matrix is materialised. Stock whenever attention dropout is active."""

    @classmethod
    def convert(cls, attn: WindowMSA) -> 'FrozenWindowMSA':
        attn.stock_type = type(attn)  # in place: its tensors and children
        attn.__class__ = cls
        return attn

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x``: ``(B * nW, N, C)`` windows; ``mask``: ``(nW, N, N)``."""
        if not needs_input_grad_only(x, self) or (
                self.attn_drop.training and self.attn_drop.p > 0):
            return super().forward(x, mask)
        b, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(
            2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(n, n, heads).permute(
                2, 0, 1)  # (heads, N, N)
        if mask is None:
            bias = bias.unsqueeze(0)
        else:  # windows and heads share one axis: one mask per (w, head)
            windows = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(
                1, windows * heads, n, n)
            q, k, v = (t.reshape(b // windows, windows * heads, n, -1)
                       for t in (q, k, v))
        if q.is_cuda:
            with sdpa_kernel(CUDA_SDPA_BACKENDS):
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        else:  # CPU: a flash kernel that takes the mask
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        out = out.reshape(b, heads, n, -1).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


# mmcv's wrappers (Swin's FFN) are the parent layers' forward for torch >= 1.6
add_frozen_layer(MMCVConv2d, FrozenConv2d)
add_frozen_layer(MMCVLinear, FrozenLinear)
add_frozen_layer(WindowMSA, FrozenWindowMSA)
add_stochastic_layer(DropPath)
