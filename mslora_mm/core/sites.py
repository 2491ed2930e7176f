"""Adapters at declared sites of any ``nn.Module`` backbone (torch only):
on the outputs of modules chosen by name pattern; the integration layer
adds mmdet ResNet plugin positions.

A *site* is where one adapter sits. Sites are declared, never coded:

- ``sites``: module-name patterns matched segment by segment (``fnmatch`` per
  dot-separated part, same number of parts: ``'stages.*.*'`` matches
  ``stages.0.1`` but not ``stages.0.1.dwconv``). Each matched module's output
  ``y`` becomes ``y + H(y)``; the adapter is registered as the module's child
  ``mslora``, so every other state-dict key stays the plain backbone's. An
  entry may be a dict ``dict(pattern=..., **adapter_overrides)`` (e.g. a rank
  per stage), and ``layout='nhwc'`` for modules returning ``(B, H, W, C)``
  maps (torchvision's Swin blocks).

Channels and layout come from one probe forward (no gradients, eval mode,
RNG state kept): ``(B, C, H, W)`` maps, or ``(B, N, C)`` tokens whose spatial
shape ``(H, W)`` is the module's ``hw_shape`` argument (Swin blocks) or the
latest ``(tokens, (H, W))`` pair a module of the backbone returned in this
forward (patch embeddings and mergings, as in ViT and Swin). Tokens beyond
``H * W`` (a ViT class or distillation token, at the front) pass through the
adapter unchanged: the adapter is a spatial operator and reweights the patch
tokens only. Token sites default to ``pre_norm=True`` (``LN_in``), map sites
to False; ``adapter_cfg`` may set it.
"""
import contextlib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial
from typing import (Dict, Iterator, List, Optional, Sequence, Tuple, Type,
                    Union)

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from .freezing import (INSIDE_RECOMPUTE, FrozenBackboneMixin,
                       RecomputedForward, adapted_class, restore_forwards)
from .frozen_layers import restore_stock_layers
from .mona import Mona
from .mslora import (ADAPTER_NAME, MSLoRA, SiteAdapter, adapter_modules,
                     unwrap_model)
from .runtime import without_runtime_keys

SiteSpec = Union[str, Dict]
#: the adapter types a site can hold (``adapter_cfg.type``; default MSLoRA)
ADAPTER_TYPES: Dict[str, Type[SiteAdapter]] = dict(MSLoRA=MSLoRA, Mona=Mona)


def adapter_spec(cfg: Dict) -> Tuple[Type[SiteAdapter], Dict]:
    """The class (``type``: a name in ``ADAPTER_TYPES`` or a ``SiteAdapter``
    class; default MSLoRA) and the arguments of an adapter config, without
    the runtime options older configs carried (``runtime.py``)."""
    cfg = without_runtime_keys(cfg)
    kind = cfg.pop('type', MSLoRA)
    if isinstance(kind, type) and issubclass(kind, SiteAdapter):
        return kind, cfg
    if kind not in ADAPTER_TYPES:
        raise ValueError(f'adapter_cfg.type={kind!r} is unknown; use one of '
                         f'{sorted(ADAPTER_TYPES)}')
    return ADAPTER_TYPES[kind], cfg


#: how a site's output holds its feature: ``(B, C, H, W)``, ``(B, H, W, C)``
#: (torchvision's Swin) or ``(B, N, C)`` tokens
LAYOUTS = ('map', 'nhwc', 'tokens')
#: the backbone attribute that keeps the handles of the hooks it was given
HANDLES = '_adapter_hook_handles'


def hook_handles(backbone: nn.Module) -> List[RemovableHandle]:
    """The handles of the hooks :func:`inject_adapters` registered on
    ``backbone``'s modules (a list kept on ``backbone``)."""
    if HANDLES not in vars(backbone):
        setattr(backbone, HANDLES, [])
    return vars(backbone)[HANDLES]


@dataclass
class AdapterSite:
    """Where one adapter sits: ``name`` (the adapted module), the feature's
    ``channels`` and ``layout`` ('map' or 'tokens')."""
    name: str
    channels: int
    layout: str


class SpatialShape:
    """The ``(H, W)`` of the token sequence currently flowing through a
    backbone, as the last ``(tokens, (H, W))`` pair a module returned."""

    def __init__(self) -> None:
        self.hw: Optional[Tuple[int, int]] = None


def _is_hw(value) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 \
        and all(isinstance(v, int) for v in value)


def _record_shape(module: nn.Module, args: tuple, output,
                  shape: SpatialShape) -> None:
    shape.hw = tuple(output[1])


def _hw_argument(args: tuple) -> Optional[Tuple[int, int]]:
    return next((tuple(a) for a in args[1:] if _is_hw(a)), None)


def _adapt_output(module: nn.Module, args: tuple, output: Tensor,
                  shape: SpatialShape, nhwc: bool = False) -> Tensor:
    """Forward hook: ``y -> adapter(y)``, tokens viewed on their grid,
    ``(B, H, W, C)`` maps (``nhwc``) as ``(B, C, H, W)`` views; with
    ``frozen_with_cp``, inside the host's recompute (``INSIDE_RECOMPUTE``).
    """
    forward = vars(module).get('forward')
    if isinstance(forward, RecomputedForward) and forward.hooks_ran_on(
            output):  # adapted inside the recompute already
        return None
    adapter = getattr(module, ADAPTER_NAME)
    if not adapter.enabled:
        return None
    if nhwc:
        return adapter(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    if output.dim() == 4:
        return adapter(output)
    hw = _hw_argument(args) or shape.hw
    extra = output.shape[1] - hw[0] * hw[1]
    if extra == 0:
        return adapter(output, hw)
    return torch.cat([output[:, :extra], adapter(output[:, extra:], hw)], 1)


setattr(_adapt_output, INSIDE_RECOMPUTE, True)


def _matches(name: str, pattern: str) -> bool:
    parts, wanted = name.split('.'), pattern.split('.')
    return len(parts) == len(wanted) and all(
        fnmatchcase(p, w) for p, w in zip(parts, wanted))


def _candidates(backbone: nn.Module, pattern: str) -> str:
    depth = pattern.count('.') + 1
    names = [n for n, _ in backbone.named_modules() if n
             and n.count('.') + 1 in (depth - 1, depth)]
    shown = ', '.join(names[:24]) + (' ...' if len(names) > 24 else '')
    return shown or 'the backbone has no submodules'


def _submodules(backbone: nn.Module, name: str) -> str:
    depth = name.count('.') + 1
    names = [n for n, _ in backbone.named_modules() if n.startswith(
        name + '.') and n.count('.') + 1 <= depth + 2]
    return ', '.join(names[:24]) + (' ...' if len(names) > 24 else '')


def _site_specs(sites: Sequence[SiteSpec]) -> List[Tuple[str, Dict]]:
    specs = []
    for site in sites:
        site = dict(pattern=site) if isinstance(site, str) else dict(site)
        if 'pattern' not in site:
            raise ValueError(f'adapter site {site} has no pattern; write '
                             "dict(pattern='stages.*.*', rank=...)")
        specs.append((site.pop('pattern'), site))
    return specs


def _probe(backbone: nn.Module, modules: Dict[str, nn.Module],
           probe_size: int) -> Tuple[Dict[str, tuple], List[nn.Module]]:
    """One forward of a ``(1, 3, S, S)`` zero image: each site module's
    output (and ``hw_shape`` argument), and the modules that return
    ``(tokens, (H, W))`` pairs."""
    outputs: Dict[str, tuple] = {}
    shape_sources = []

    def record(name, module, args, output):
        outputs.setdefault(name, (output, _hw_argument(args)))

    def source(module, args, output):
        if isinstance(output, tuple) and len(output) == 2 and \
                isinstance(output[0], Tensor) and _is_hw(output[1]):
            shape_sources.append(module)

    handles = [m.register_forward_hook(partial(record, n))
               for n, m in modules.items()]
    handles += [m.register_forward_hook(source) for m in backbone.modules()]
    modes = {m: m.training for m in backbone.modules()}
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            backbone.eval()
            param = next(backbone.parameters(), None)
            backbone(torch.zeros(1, 3, probe_size, probe_size,
                                 device=param.device if param is not None
                                 else 'cpu'))
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes.items():
            m.training = mode
    return outputs, list(dict.fromkeys(shape_sources))


def inject_adapters(backbone: nn.Module, sites: Sequence[SiteSpec],
                    adapter_cfg: Optional[Dict] = None,
                    probe_size: int = 64) -> List[AdapterSite]:
    """Attach an MSLoRA adapter to the output of every module of
    ``backbone`` that a site pattern matches; returns the sites in
    registration order. Errors name the pattern or module and list
    candidate module names."""
    adapter_cfg = dict(adapter_cfg or {})
    chosen: Dict[str, Tuple[nn.Module, Dict]] = {}
    for pattern, overrides in _site_specs(sites):
        found = {n: m for n, m in backbone.named_modules()
                 if n and _matches(n, pattern)}
        if not found:
            raise ValueError(
                f'adapter site pattern {pattern!r} matches no module of '
                f'{type(backbone).__name__}; candidates: '
                f'{_candidates(backbone, pattern)}')
        for name, module in found.items():
            chosen[name] = (module, {**adapter_cfg, **overrides})
    outputs, shape_sources = _probe(
        backbone, {n: m for n, (m, _) in chosen.items()}, probe_size)
    shape = SpatialShape()
    handles = hook_handles(backbone)
    for module in shape_sources:
        handles.append(module.register_forward_hook(
            partial(_record_shape, shape=shape)))
    result = []
    for name, (module, cfg) in chosen.items():
        if name not in outputs:
            raise ValueError(
                f'adapter site {name!r} of {type(backbone).__name__} was not '
                'run by its forward; choose modules on the forward path')
        output, hw = outputs[name]
        if not isinstance(output, Tensor) or output.dim() not in (3, 4):
            kind = type(output).__name__ if not isinstance(output, Tensor) \
                else f'a {output.dim()}-D tensor'
            raise ValueError(
                f'adapter site {name!r} returns {kind}, not a (B, C, H, W) '
                'map or a (B, N, C) token sequence; choose one of its '
                f'submodules: {_submodules(backbone, name) or "(none)"}')
        layout = cfg.pop('layout', None) or (
            'map' if output.dim() == 4 else 'tokens')
        if layout not in LAYOUTS or (layout == 'tokens') != (
                output.dim() == 3):
            raise ValueError(
                f'adapter site {name!r}: layout={layout!r} does not fit its '
                f'{output.dim()}-D output; use one of {LAYOUTS}: 4-D maps '
                "are 'map' (B, C, H, W) or 'nhwc' (B, H, W, C)")
        if layout == 'tokens' and hw is None and not shape_sources:
            raise ValueError(
                f'adapter site {name!r} returns tokens {tuple(output.shape)} '
                'but no module passes or returns their (H, W) shape; adapt '
                'a module whose output is a (B, C, H, W) map instead')
        channels = output.shape[dict(map=1, nhwc=3, tokens=2)[layout]]
        kind, cfg = adapter_spec(cfg)
        if kind is MSLoRA:
            cfg.setdefault('pre_norm', layout == 'tokens')
        module.add_module(ADAPTER_NAME, kind(channels, site=name, **cfg))
        handles.append(module.register_forward_hook(
            partial(_adapt_output, shape=shape, nhwc=layout == 'nhwc')))
        result.append(AdapterSite(name, channels, layout))
    return result


def freeze_pretrained(model: nn.Module, body_dropout: bool = True,
                      probe_size: int = 64) -> nn.Module:
    """Freeze ``model`` (any ``nn.Module`` backbone) but its adapters, in
    place, from now on: the pretrained parameters lose ``requires_grad``,
    frozen layers become activation-free ones, adapters no output depends
    on are frozen, and ``model.train()`` keeps the frozen body in eval mode
    (BatchNorm statistics frozen) while the adapters train; the body's
    dropout follows ``train()`` unless ``body_dropout=False``. Returns
    ``model``, now of class ``MSLoRA<Type>``."""
    if not isinstance(model, FrozenBackboneMixin):
        model.__class__ = adapted_class(type(model))
    model.body_dropout = body_dropout
    model.probe_size = probe_size
    model.freeze_pretrained()
    return model


def _backbone(model: nn.Module) -> nn.Module:
    """The backbone of a (wrapped) detector or classifier, or ``model``."""
    model = unwrap_model(model)
    return getattr(model, 'backbone', model)


@contextlib.contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside ``with disable_adapters(model):`` every adapter of ``model``
    (a detector, classifier or backbone) is skipped, its computation
    included: the frozen base runs as if no adapter existed (the baseline,
    in the same process). Adapters are back on exit, untouched."""
    adapters = [a for _, a in adapter_modules(_backbone(model))]
    states = [a.enabled for a in adapters]
    for adapter in adapters:
        adapter.enabled = False
    try:
        yield model
    finally:
        for adapter, state in zip(adapters, states):
            adapter.enabled = state


def remove_adapters(model: nn.Module) -> nn.Module:
    """Take every adapter out of ``model`` (a detector, classifier or
    backbone), in place, as peft's ``unload``: no adapter module, hook or
    plugin entry is left, the backbone is of its plain class again with
    stock layers (its ``train()``, its state-dict keys, its outputs). The
    pretrained parameters keep ``requires_grad=False``. Returns ``model``.
    """
    backbone = _backbone(model)
    for name, _ in list(adapter_modules(backbone)):
        host_name, attr = name.rpartition('.')[::2]
        host = backbone.get_submodule(host_name) if host_name else backbone
        delattr(host, attr)
        for position in ('after_conv1', 'after_conv2', 'after_conv3'):
            names = getattr(host, f'{position}_plugin_names', None)
            if names and attr in names:
                names.remove(attr)
    for handle in vars(backbone).pop(HANDLES, []):
        handle.remove()
    cls = type(backbone)
    if issubclass(cls, FrozenBackboneMixin):
        backbone.__class__ = next(b for b in cls.__bases__
                                  if not issubclass(b, FrozenBackboneMixin))
    restore_stock_layers(backbone)
    restore_forwards(backbone)
    return model
