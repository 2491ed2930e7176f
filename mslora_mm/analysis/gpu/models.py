"""The models the GPU check trains, with PyTorch and torchvision alone:
ResNet-50 and Swin-T with MSLoRA, and the LoRA peer of its cost table."""
from typing import List

import torch
import torch.nn as nn
from torch import Tensor

from ...core import freeze_pretrained, inject_adapters


def calibrated(model: nn.Module, size: int = 64) -> nn.Module:
    """``model`` with BatchNorm statistics of one random batch, so that a
    randomly initialised body keeps activations in range as a pretrained
    one does (fp16 overflows otherwise)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # a cumulative average: this batch's statistics
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def resnet50_mslora(rank: int = 64, **options) -> nn.Module:
    """torchvision's ResNet-50 (zero-initialised residual branches, as
    mmdet initialises them, and calibrated statistics: a random body whose
    gradients are not chaotic, as a pretrained one's) with MSLoRA on every
    Bottleneck's output, frozen but for the adapters."""
    import torchvision
    model = calibrated(torchvision.models.resnet50(zero_init_residual=True))
    inject_adapters(model, ['layer*.*'], dict(rank=rank, **options))
    return freeze_pretrained(model)


def swin_t_mslora(rank: int = 32, **options) -> nn.Module:
    """torchvision's Swin-T with MSLoRA on every block's ``(B, H, W, C)``
    output, frozen but for the adapters."""
    import torchvision
    model = torchvision.models.swin_t()
    inject_adapters(model, [dict(pattern='features.[1357].*', layout='nhwc',
                                 pre_norm=True)], dict(rank=rank, **options),
                    probe_size=64)
    return freeze_pretrained(model)


class LoRA(nn.Module):
    """A LoRA of rank ``rank`` beside a frozen ``Conv2d``/``Linear``:
    ``layer(x) + B(A(x))``, ``B`` zero (the peer of the cost table). The
    package's peer (``models.peft_lora``) is peft's LoRA registered in
    mmdet's registry; the GPU check runs with PyTorch alone."""

    def __init__(self, layer: nn.Module, rank: int) -> None:
        super().__init__()
        self.layer = layer
        if isinstance(layer, nn.Conv2d):
            self.a = nn.Conv2d(layer.in_channels, rank, layer.kernel_size,
                               layer.stride, layer.padding, layer.dilation,
                               bias=False)
            self.b = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        else:
            self.a = nn.Linear(layer.in_features, rank, bias=False)
            self.b = nn.Linear(rank, layer.out_features, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x) + self.b(self.a(x))


def add_lora(model: nn.Module, hosts: List[str], rank: int) -> nn.Module:
    """:class:`LoRA` on every ungrouped ``Conv2d``/``Linear`` inside the
    modules ``hosts``; only LoRA trains."""
    model.requires_grad_(False)
    for host in hosts:
        for name, child in list(model.get_submodule(host).named_modules()):
            if isinstance(child, (nn.Conv2d, nn.Linear)) and getattr(
                    child, 'groups', 1) == 1:
                parent, _, attr = f'{host}.{name}'.rpartition('.')
                setattr(model.get_submodule(parent), attr, LoRA(child, rank))
    return model
