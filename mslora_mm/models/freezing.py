"""The freezing policy shared by every MSLoRA backbone.

Everything that is not an adapter is pretrained and frozen: ``requires_grad``
is switched off at construction and frozen modules (BatchNorm statistics
included) stay in eval mode on every ``train()`` call, except the stochastic
layers (dropout, drop-path), which follow ``train()``/``eval()`` as in mmdet
unless ``body_dropout=False``. Frozen layers are swapped for versions that
save no activations (``frozen_layers.py``); with ``frozen_with_cp`` the
modules hosting adapters also recompute their frozen forward (and an adapter
attached to their output) in backward.
"""
import weakref
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .frozen_layers import convert_frozen_layers
from .mslora import adapter_modules, adapter_parameter_names


def freeze_all_but_adapters(model: nn.Module) -> None:
    """Set ``requires_grad`` to False on every non-adapter parameter.

    Adapters keep their flag: those inside a backbone's ``frozen_stages``
    stay frozen with their stage."""
    keep = set(adapter_parameter_names(model))
    for name, param in model.named_parameters():
        if name not in keep:
            param.requires_grad_(False)


#: Layers whose training mode only switches randomness on, never statistics.
STOCHASTIC_LAYERS = (nn.modules.dropout._DropoutNd, DropPath)


def set_train_mode(model: nn.Module, mode: bool,
                   body_dropout: bool = True) -> None:
    """Frozen modules to eval, trainable adapters to ``mode``.

    Call it after the backbone's own ``train(mode)``: stochastic layers then
    keep the mode that gave them (off inside ``frozen_stages``), or are all
    switched off with ``body_dropout=False``."""
    stochastic = [m for m in model.modules()
                  if isinstance(m, STOCHASTIC_LAYERS) and m.training] \
        if body_dropout else []
    nn.Module.train(model, False)
    for m in stochastic:
        m.train(True)
    for _, adapter in adapter_modules(model):
        adapter.train(mode and any(p.requires_grad
                                   for p in adapter.parameters()))


def freeze_pretrained(model: nn.Module) -> None:
    """Freeze every non-adapter parameter of ``model`` and swap its frozen
    layers for the activation-free ones."""
    freeze_all_but_adapters(model)
    convert_frozen_layers(model)


#: a forward hook whose function has this attribute set (an output
#: adapter's) runs inside its module's recompute (``RecomputedForward``),
#: and returns None when torch calls it after the forward if
#: ``RecomputedForward.hooks_ran_on(output)``
INSIDE_RECOMPUTE = 'mslora_inside_recompute'


class RecomputedForward:
    """A module's own ``forward`` and its ``INSIDE_RECOMPUTE`` forward hooks
    (an output adapter; other hooks stay outside) under activation
    checkpointing whenever a gradient flows through it: autograd keeps the
    module's inputs, and backward replays the forward (random draws
    included) to get the rest."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.forward = module.forward
        self._hooked: Optional[weakref.ref] = None

    def hooks_ran_on(self, output: Tensor) -> bool:
        """Whether ``output`` is what the last call returned after running
        the ``INSIDE_RECOMPUTE`` hooks."""
        return self._hooked is not None and self._hooked() is output

    def _forward_and_hooks(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for hook in list(self.module._forward_hooks.values()):
            if getattr(getattr(hook, 'func', hook), INSIDE_RECOMPUTE, False):
                result = hook(self.module, args, out)
                out = out if result is None else result
        return out

    def __call__(self, *args, **kwargs):
        self._hooked = None
        if torch.is_grad_enabled() and any(
                isinstance(a, Tensor) and a.requires_grad for a in args):
            out = checkpoint(self._forward_and_hooks, *args,
                             use_reentrant=False, **kwargs)
            if isinstance(out, Tensor):
                self._hooked = weakref.ref(out)
            return out
        return self.forward(*args, **kwargs)


def recompute_adapter_hosts(model: nn.Module) -> None:
    """Make every module of ``model`` that hosts an adapter recompute its
    forward in backward (:class:`RecomputedForward`)."""
    for name, _ in adapter_modules(model):
        host = model.get_submodule(name.rpartition('.')[0])
        if not isinstance(vars(host).get('forward'), RecomputedForward):
            host.forward = RecomputedForward(host)


def restore_forwards(model: nn.Module) -> None:
    """Undo :func:`recompute_adapter_hosts`."""
    for module in model.modules():
        if isinstance(vars(module).get('forward'), RecomputedForward):
            del module.forward


class FrozenBackboneMixin:
    """Mix into a backbone (before the backbone class) to freeze its
    pretrained weights; call :meth:`freeze_pretrained` at the end of
    ``__init__`` once the adapters exist.

    Attributes:
        body_dropout (bool): dropout/drop-path layers of the frozen body
            follow ``train()`` (True, mmdet's behaviour) or stay off.
        frozen_with_cp (bool): the modules hosting adapters keep only their
            inputs for backward and recompute the rest (less memory, one
            more forward of the body in backward).
    """
    body_dropout: bool = True
    frozen_with_cp: bool = False

    def freeze_pretrained(self) -> None:
        """Freeze the body and the adapters inside ``frozen_stages`` (which
        the base class froze before they existed): the trainable set is
        final from here on, as DDP requires."""
        if hasattr(self, '_freeze_stages'):
            self._freeze_stages()
        freeze_pretrained(self)
        if self.frozen_with_cp:
            recompute_adapter_hosts(self)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        set_train_mode(self, mode, self.body_dropout)
        return self
