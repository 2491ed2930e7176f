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
import logging
import weakref
from typing import Dict, List, Optional, Tuple, Type

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .frozen_layers import convert_frozen_layers
from .log import AdapterKeysFilter, log
from .mslora import (adapter_modules, adapter_parameter_names,
                     is_adapter_key)


def freeze_all_but_adapters(model: nn.Module) -> None:
    """Set ``requires_grad`` to False on every non-adapter parameter.

    Adapters keep their flag: those inside a backbone's ``frozen_stages``
    stay frozen with their stage."""
    keep = set(adapter_parameter_names(model))
    for name, param in model.named_parameters():
        if name not in keep:
            param.requires_grad_(False)


#: Layers whose training mode only switches randomness on, never statistics
#: (the integration layer adds mmcv's DropPath: ``add_stochastic_layer``).
STOCHASTIC_LAYERS: Tuple[type, ...] = (nn.modules.dropout._DropoutNd, )


def add_stochastic_layer(cls: type) -> None:
    """Count ``cls`` among :data:`STOCHASTIC_LAYERS` (drop-path of a
    library)."""
    global STOCHASTIC_LAYERS
    if cls not in STOCHASTIC_LAYERS:
        STOCHASTIC_LAYERS = STOCHASTIC_LAYERS + (cls, )


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


def _tensors(output) -> List[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _tensors(o)]
    if isinstance(output, dict):
        return [t for o in output.values() for t in _tensors(o)]
    return []


def unreachable_adapters(model: nn.Module, probe_size: int = 64
                         ) -> List[str]:
    """Names of the trainable adapters of ``model`` that no output depends
    on (e.g. in stages after the last of ``out_indices``, which mmdet's
    ResNet and Swin still run), found by one forward and backward of a
    ``(1, 3, S, S)`` zero image in eval mode (RNG state kept)."""
    adapters = [(name, [p for p in adapter.parameters() if p.requires_grad])
                for name, adapter in adapter_modules(model)]
    adapters = [(name, params) for name, params in adapters if params]
    if not adapters:
        return []
    flat = [p for _, params in adapters for p in params]
    saved = [p.grad for p in flat]
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters())
    try:
        for p in flat:
            p.grad = None
        with torch.enable_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            outputs = _tensors(model(torch.zeros(
                1, 3, probe_size, probe_size, device=param.device)))
            losses = [o.float().sum() for o in outputs if o.requires_grad]
            if losses:  # .backward(): reentrant checkpoints refuse .grad()
                sum(losses).backward()
        grads = [p.grad for p in flat]
    finally:
        for m, mode in modes.items():
            m.training = mode
        for p, grad in zip(flat, saved):
            p.grad = grad
    reached = {id(p) for p, g in zip(flat, grads) if g is not None}
    return [name for name, params in adapters
            if not any(id(p) in reached for p in params)]


def freeze_unreachable_adapters(model: nn.Module,
                                probe_size: int = 64) -> List[str]:
    """Freeze the adapters of :func:`unreachable_adapters` (DDP with
    ``find_unused_parameters=False`` needs every trainable parameter to get
    a gradient), log them; their names."""
    try:
        names = unreachable_adapters(model, probe_size)
    except RuntimeError as e:  # e.g. an op that needs a larger image
        log(f'{type(model).__name__}: could not probe which adapters reach '
            f'an output with a {probe_size}x{probe_size} image ({e}); all '
            'stay trainable (set probe_size to a size the backbone takes)',
            logging.WARNING)
        return []
    for name in names:
        model.get_submodule(name).requires_grad_(False)
    if names:
        log(f'{type(model).__name__}: {len(names)} adapter(s) cannot '
            'reach an output (out_indices) and stay frozen: '
            f'{", ".join(n.rpartition(".")[0] for n in names)}',
            logging.WARNING)
    return names


def freeze_body(model: nn.Module) -> None:
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
    """The replacement ``forward`` of a module hosting adapters under
    ``frozen_with_cp``: its own forward and its ``INSIDE_RECOMPUTE`` forward
    hooks (an output adapter; other hooks stay outside) run under activation
    checkpointing whenever a gradient flows through them; autograd keeps the
    module's inputs, and backward replays the forward (random draws
    included) to get the rest.

    Args:
        module (nn.Module): the host; ``module.forward`` becomes this
            object, its original forward is kept as ``self.forward``.

    Returns (when called):
        The module's output, as its hooks made it.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.forward = module.forward
        self._hooked: Optional[weakref.ref] = None

    def __getstate__(self) -> dict:
        return dict(vars(self), _hooked=None)  # a weakref does not pickle

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
    probe_size: int = 64

    def freeze_pretrained(self) -> None:
        """Freeze the body, the adapters inside ``frozen_stages`` (which
        the base class froze before they existed) and those no output
        depends on: the trainable set is final from here on, as DDP
        requires."""
        if hasattr(self, '_freeze_stages'):
            self._freeze_stages()
        freeze_body(self)
        freeze_unreachable_adapters(self, self.probe_size)
        if self.frozen_with_cp:
            recompute_adapter_hosts(self)
        self.train(self.training)

    def init_weights(self) -> None:
        """The base class's ``init_weights`` (its pretrained ``init_cfg``);
        the adapter parameters a plain backbone's checkpoint lacks are said
        in one line, not listed as missing keys (other keys still are)."""
        base = getattr(super(), 'init_weights', None)
        if base is None:
            return
        try:
            from mmengine.logging import MMLogger
        except ImportError:
            return base()
        logger = MMLogger.get_current_instance()
        said = AdapterKeysFilter(is_adapter_key)
        logger.addFilter(said)
        try:
            base()
        finally:
            logger.removeFilter(said)
        if said.count:
            log(f'{type(self).__name__}: {said.count} adapter parameters are '
                'not in the pretrained checkpoint and start from their '
                'initialisation (the identity), as intended')

    def train(self, mode: bool = True):
        super().train(mode)
        set_train_mode(self, mode, self.body_dropout)
        return self

    def __reduce_ex__(self, protocol: int):
        base = type(self).__dict__.get('plain_class')
        if base is None:  # a class written by hand: pickled by name
            return super().__reduce_ex__(protocol)
        return _new_adapted, (base, type(self).__bases__[0]), self.__dict__



_ADAPTED: Dict[type, type] = {}


def adapted_class(base: Type[nn.Module],
                  mixin: Type[FrozenBackboneMixin] = FrozenBackboneMixin,
                  doc: Optional[str] = None,
                  name: Optional[str] = None) -> Type[nn.Module]:
    """``MSLoRA<Base>`` (or ``name``) = ``mixin`` + ``base``, the class of
    every adapted ``base`` (made once per base class: a preset's where
    there is one).
    Its instances pickle and deepcopy by recipe (the base and the mixin),
    so a process that never made the class can load them. A preset made
    after the plain adapted class of its base (mmseg's, made on first use)
    takes its place."""
    if not issubclass(_ADAPTED.get(base, object), mixin):
        _ADAPTED[base] = type(
            name or f'MSLoRA{base.__name__}', (mixin, base),
            dict(__doc__=doc or mixin.__doc__, __module__=mixin.__module__,
                 plain_type=base.__name__, plain_class=base))
    return _ADAPTED[base]


def _new_adapted(base: Type[nn.Module],
                 mixin: Type[FrozenBackboneMixin]) -> nn.Module:
    """An empty instance of ``adapted_class(base, mixin)`` (unpickling)."""
    cls = adapted_class(base, mixin)
    return cls.__new__(cls)
