"""The freezing policy shared by every MSLoRA backbone.

Everything that is not an adapter is pretrained and frozen: ``requires_grad``
is switched off at construction and frozen modules (BatchNorm statistics
included) stay in eval mode on every ``train()`` call. Frozen BatchNorms
become :class:`FrozenBatchNorm2d`, the same affine map without the saved
activation.
"""
from typing import Iterator, List, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .mslora import MSLoRA


def adapter_modules(model: nn.Module) -> Iterator[Tuple[str, MSLoRA]]:
    """Yield ``(name, module)`` for every MSLoRA adapter in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, MSLoRA):
            yield name, module


def adapter_parameter_names(model: nn.Module) -> List[str]:
    """Names (relative to ``model``) of all adapter parameters."""
    return [
        f'{prefix}.{name}' if prefix else name
        for prefix, adapter in adapter_modules(model)
        for name, _ in adapter.named_parameters()
    ]


def freeze_all_but_adapters(model: nn.Module) -> None:
    """Set ``requires_grad`` to False on every non-adapter parameter.

    Adapters keep their flag: those inside a backbone's ``frozen_stages``
    stay frozen with their stage."""
    keep = set(adapter_parameter_names(model))
    for name, param in model.named_parameters():
        if name not in keep:
            param.requires_grad_(False)


def set_train_mode(model: nn.Module, mode: bool) -> None:
    """Frozen modules to eval, trainable adapters to ``mode``."""
    nn.Module.train(model, False)
    for _, adapter in adapter_modules(model):
        adapter.train(mode and any(p.requires_grad
                                   for p in adapter.parameters()))


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with running statistics, as one affine map per channel.

    In eval mode ``y = x * s + t`` with ``s = w / sqrt(var + eps)`` and
    ``t = b - mean * s``: what ``nn.BatchNorm2d`` computes, but autograd saves
    only ``s`` (the C scales) instead of the ``(B, C, H, W)`` input, and the
    backward is one multiply. Same parameters, buffers and state-dict keys as
    ``nn.BatchNorm2d``; in train mode it is ``nn.BatchNorm2d``.
    """

    @classmethod
    def convert(cls, bn: nn.BatchNorm2d) -> 'FrozenBatchNorm2d':
        frozen = cls(bn.num_features, bn.eps, bn.momentum, bn.affine,
                     bn.track_running_stats).to(bn.weight.device)
        frozen.load_state_dict(bn.state_dict())
        frozen.train(bn.training)
        for mine, theirs in zip(frozen.parameters(), bn.parameters()):
            mine.requires_grad_(theirs.requires_grad)
        return frozen

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.running_var is None or x.dim() != 4:
            return super().forward(x)
        scale = torch.sqrt(self.running_var + self.eps).reciprocal()
        if self.weight is not None:
            scale = scale * self.weight
        shift = -(self.running_mean * scale)
        if self.bias is not None:
            shift = self.bias - self.running_mean * scale
        return torch.addcmul(shift.view(1, -1, 1, 1), x,
                             scale.view(1, -1, 1, 1))


def convert_frozen_batchnorms(model: nn.Module) -> None:
    """Replace every frozen ``BatchNorm2d`` (or torch ``SyncBatchNorm``) of
    ``model`` by a :class:`FrozenBatchNorm2d` holding the same tensors."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) in (nn.BatchNorm2d, nn.SyncBatchNorm)
                    and not any(p.requires_grad for p in child.parameters())):
                setattr(parent, name, FrozenBatchNorm2d.convert(child))


class FrozenBackboneMixin:
    """Mix into a backbone (before the backbone class) to freeze its
    pretrained weights; call :meth:`freeze_pretrained` at the end of
    ``__init__`` once the adapters exist."""

    def freeze_pretrained(self) -> None:
        freeze_all_but_adapters(self)
        convert_frozen_batchnorms(self)

    def train(self, mode: bool = True):
        super().train(mode)
        set_train_mode(self, mode)
        return self
