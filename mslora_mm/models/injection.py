"""One attachment path for every backbone: adapters on the outputs of
modules chosen by name pattern, or at mmdet ResNet plugin positions.

A *site* is where one adapter sits. Sites are declared, never coded:

- ``sites``: module-name patterns matched segment by segment (``fnmatch`` per
  dot-separated part, same number of parts: ``'stages.*.*'`` matches
  ``stages.0.1`` but not ``stages.0.1.dwconv``). Each matched module's output
  ``y`` becomes ``y + H(y)``; the adapter is registered as the module's child
  ``mslora``, so every other state-dict key stays the plain backbone's. An
  entry may be a dict ``dict(pattern=..., **adapter_overrides)`` (e.g. a rank
  per stage).
- ``plugin_position`` ('after_conv2' / 'after_conv3'): inside every
  ``Bottleneck`` of an mmdet ResNet-family backbone, through its ``plugins``.

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
import copy
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial
from typing import (Dict, Iterator, List, Optional, Sequence, Tuple, Type,
                    Union)

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS
from torch import Tensor

from mmdet.registry import MODELS
from .freezing import (INSIDE_RECOMPUTE, FrozenBackboneMixin,
                       RecomputedForward, restore_forwards)
from .frozen_layers import restore_stock_layers
from .mslora import ADAPTER_NAME, MSLoRA, adapter_modules, unwrap_model

POSITIONS = ('after_conv2', 'after_conv3')
SiteSpec = Union[str, Dict]


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
                  shape: SpatialShape) -> Tensor:
    """Forward hook: ``y -> adapter(y)``, tokens viewed on their grid; with
    ``frozen_with_cp``, inside the host's recompute (``INSIDE_RECOMPUTE``).
    """
    forward = vars(module).get('forward')
    if isinstance(forward, RecomputedForward) and forward.hooks_ran_on(
            output):  # adapted inside the recompute already
        return None
    adapter = getattr(module, ADAPTER_NAME)
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
    for module in shape_sources:
        module.register_forward_hook(partial(_record_shape, shape=shape))
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
        layout = 'map' if output.dim() == 4 else 'tokens'
        if layout == 'tokens' and hw is None and not shape_sources:
            raise ValueError(
                f'adapter site {name!r} returns tokens {tuple(output.shape)} '
                'but no module passes or returns their (H, W) shape; adapt '
                'a module whose output is a (B, C, H, W) map instead')
        channels = output.shape[1] if layout == 'map' else output.shape[2]
        cfg.setdefault('pre_norm', layout == 'tokens')
        module.add_module(ADAPTER_NAME, MSLoRA(channels, site=name, **cfg))
        module.register_forward_hook(partial(_adapt_output, shape=shape))
        result.append(AdapterSite(name, channels, layout))
    return result


def resnet_plugins(position: str, ranks: Sequence[int],
                   adapter_cfg: Dict) -> List[dict]:
    """mmdet ``plugins`` entries: one MSLoRA per Bottleneck at ``position``,
    with ``ranks[i]`` in stage ``i``."""
    if position not in POSITIONS:
        raise ValueError(f'adapter_position={position!r} is unknown; use '
                         f'one of {POSITIONS}')
    return [dict(cfg=dict(type=MSLoRA, rank=rank, **adapter_cfg),
                 position=position,
                 stages=tuple(j == i for j in range(len(ranks))))
            for i, rank in enumerate(ranks)]


def per_stage(rank: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    """Expand ``rank`` (an int, or one int per stage) to a per-stage list."""
    if isinstance(rank, int):
        return [rank] * num_stages
    rank = list(rank)
    if len(rank) != num_stages:
        raise ValueError(f'adapter_cfg.rank={rank} gives {len(rank)} ranks '
                         f'for {num_stages} stages; give one int or one per '
                         'stage')
    return rank


_ADAPTED: Dict[type, type] = {}


def register_adapted_class(base: Type[nn.Module],
                           mixin: Type[FrozenBackboneMixin],
                           doc: str) -> Type[nn.Module]:
    """Create and register (once) ``MSLoRA<Base>`` = ``mixin`` + ``base``,
    the class every MSLoRA-adapted ``base`` has."""
    if base not in _ADAPTED:
        cls = type(f'MSLoRA{base.__name__}', (mixin, base),
                   dict(__doc__=doc, __module__=mixin.__module__,
                        plain_type=base.__name__))
        MODELS.register_module(module=cls)
        _ADAPTED[base] = cls
    return _ADAPTED[base]


def adapted_class(base: Type[nn.Module]) -> Type[nn.Module]:
    """``MSLoRA<Base>``: ``base`` with the frozen-backbone policy mixed in
    (``train()`` keeps the body frozen); the preset class where there is
    one, else made once per class (not registered: build it through
    ``MSLoRABackbone``)."""
    if base not in _ADAPTED:
        _ADAPTED[base] = type(
            f'MSLoRA{base.__name__}', (FrozenBackboneMixin, base),
            dict(__module__=base.__module__, plain_type=base.__name__))
    return _ADAPTED[base]


def build_mslora_backbone(backbone: Dict,
                          sites: Sequence[SiteSpec] = (),
                          plugin_position: Optional[str] = None,
                          adapter_cfg: Optional[Dict] = None,
                          body_dropout: bool = True,
                          frozen_with_cp: bool = False,
                          probe_size: Optional[int] = None) -> nn.Module:
    """``type='MSLoRABackbone'``: any registered backbone with MSLoRA at the
    declared sites, everything else frozen from construction on.

    Args:
        backbone (dict): the plain backbone's config, from any OpenMMLab
            registry (``'mmpretrain.ConvNeXt'``, ``'ResNet'``, ...), with its
            ``init_cfg``; the result has exactly its state-dict keys plus
            the adapters'.
        sites (Sequence[str | dict]): module-name patterns whose outputs
            are adapted (see the module docstring).
        plugin_position (str, optional): 'after_conv2' / 'after_conv3':
            adapters inside every Bottleneck (mmdet ResNet family) at
            ``adapter_cfg.rank`` (an int or one per stage).
        adapter_cfg (dict, optional): ``MSLoRA`` arguments except
            ``in_channels``.
        body_dropout (bool): the frozen body's dropout and drop-path follow
            ``train()``/``eval()``. Defaults to True.
        frozen_with_cp (bool): the modules hosting adapters keep only their
            inputs for backward and recompute their frozen forward there
            (less memory, more time). Defaults to False.
        probe_size (int, optional): side of the probe image that reveals
            channels and layouts. Defaults to the backbone's ``img_size``
            argument if it has one, else 64.

    Returns:
        The backbone itself, of class ``MSLoRA<Type>``.
    """
    cfg = ConfigDict(copy.deepcopy(backbone))  # attribute access, as built
    adapter_cfg = dict(adapter_cfg or {})
    if not sites and plugin_position is None:
        raise ValueError('MSLoRABackbone needs sites (module-name patterns) '
                         'or plugin_position; see docs/new_backbone.md')
    if plugin_position is not None:
        ranks = per_stage(adapter_cfg.pop('rank', 128),
                          cfg.get('num_stages', 4))
        cfg['plugins'] = list(cfg.get('plugins') or []) + resnet_plugins(
            plugin_position, ranks, adapter_cfg)
    try:
        model = MODELS.build(cfg)
    except TypeError as e:
        if plugin_position is not None and 'plugins' in str(e):
            raise ValueError(
                f'plugin_position needs an mmdet ResNet-family backbone that '
                f'takes plugins; {cfg["type"]} does not ({e}). Use sites=[...] '
                'instead') from None
        raise
    if sites:
        img_size = cfg.get('img_size')
        inject_adapters(model, sites, adapter_cfg, probe_size or (
            img_size if isinstance(img_size, int) else 64))
    return _frozen(model, body_dropout, frozen_with_cp)


def _frozen(model: nn.Module, body_dropout: bool,
            frozen_with_cp: bool = False) -> nn.Module:
    """``model`` as ``MSLoRA<Type>``: everything but its adapters frozen,
    from now on."""
    model.__class__ = adapted_class(type(model))
    model.body_dropout = body_dropout
    model.frozen_with_cp = frozen_with_cp
    model.freeze_pretrained()
    return model


def build_frozen_backbone(backbone: Dict,
                          body_dropout: bool = True) -> nn.Module:
    """``type='FrozenBackbone'``: any registered backbone, entirely frozen
    and without adapters (the frozen layers, frozen BatchNorm and ``train()``
    policy of an MSLoRA backbone): the baseline an adapter must beat.

    Args:
        backbone (dict): the plain backbone's config, with its ``init_cfg``.
        body_dropout (bool): as for ``MSLoRABackbone``.
    """
    return _frozen(MODELS.build(ConfigDict(copy.deepcopy(backbone))),
                   body_dropout)


# every OpenMMLab scope (mmdet, mmpretrain, ...) finds them through the root
ROOT_MODELS.register_module(name='MSLoRABackbone',
                            module=build_mslora_backbone)
ROOT_MODELS.register_module(name='FrozenBackbone',
                            module=build_frozen_backbone)


def plain_backbone_config(cfg: Dict) -> Dict:
    """The adapter-free backbone config behind an MSLoRA backbone config
    (``MSLoRABackbone``, ``FrozenBackbone`` or a preset such as
    ``MSLoRAResNet``); other configs unchanged."""
    cfg = copy.deepcopy(dict(cfg))
    if cfg['type'] in ('MSLoRABackbone', build_mslora_backbone,
                       'FrozenBackbone', build_frozen_backbone):
        return dict(cfg['backbone'])
    plain_type = getattr(MODELS.get(cfg['type']), 'plain_type', None)
    if plain_type is None:
        return cfg
    for key in ('adapter_cfg', 'adapter_position', 'body_dropout',
                'frozen_with_cp', 'probe_size'):
        cfg.pop(key, None)
    cfg['type'] = plain_type
    return cfg


def _backbone(model: nn.Module) -> nn.Module:
    """The backbone of a (wrapped) detector or classifier, or ``model``."""
    model = unwrap_model(model)
    return getattr(model, 'backbone', model)


def _identity(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    return args[0]


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside ``with disable_adapters(model):`` every adapter of ``model``
    (a detector, classifier or backbone) is skipped: the frozen base runs as
    if no adapter existed (the baseline, in the same process). Adapters are
    back on exit, untouched."""
    handles = [adapter.register_forward_hook(_identity)
               for _, adapter in adapter_modules(_backbone(model))]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


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
        for position in POSITIONS + ('after_conv1', ):
            names = getattr(host, f'{position}_plugin_names', None)
            if names and attr in names:
                names.remove(attr)
    for module in backbone.modules():
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, 'func', None) in (_adapt_output, _record_shape):
                del module._forward_hooks[key]
    cls = type(backbone)
    if issubclass(cls, FrozenBackboneMixin):
        backbone.__class__ = next(b for b in cls.__bases__
                                  if not issubclass(b, FrozenBackboneMixin))
    restore_stock_layers(backbone)
    restore_forwards(backbone)
    return model
