"""The OpenMMLab face of the site mechanism (``mslora_mm.core.sites``):
``type='MSLoRABackbone'`` and ``type='FrozenBackbone'`` for any registered
backbone, adapters at mmdet ResNet ``plugins`` positions
(``plugin_position``), and the presets' shared pieces.
"""
import copy
from typing import Dict, List, Optional, Sequence, Type, Union

import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS

from mmdet.registry import MODELS
from ..core.freezing import FrozenBackboneMixin, adapted_class
from ..core.sites import (SiteSpec, adapter_spec, freeze_pretrained,
                          inject_adapters)

POSITIONS = ('after_conv2', 'after_conv3')


def resnet_plugins(position: str, ranks: Sequence[int],
                   adapter_cfg: Dict) -> List[dict]:
    """mmdet ``plugins`` entries: one adapter (``adapter_cfg.type``, default
    MSLoRA) per Bottleneck at ``position``, with ``ranks[i]`` in stage
    ``i``."""
    if position not in POSITIONS:
        raise ValueError(f'adapter_position={position!r} is unknown; use '
                         f'one of {POSITIONS}')
    kind, adapter_cfg = adapter_spec(adapter_cfg)
    return [dict(cfg=dict(type=kind, rank=rank, **adapter_cfg),
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


def register_adapted_class(base: Type[nn.Module],
                           mixin: Type[FrozenBackboneMixin],
                           doc: str,
                           name: Optional[str] = None) -> Type[nn.Module]:
    """``adapted_class(base, mixin, doc, name)``, registered in mmdet's
    ``MODELS`` (a preset: ``type='MSLoRA<Base>'`` in configs)."""
    cls = adapted_class(base, mixin, doc, name)
    if MODELS.get(cls.__name__) is not cls:
        MODELS.register_module(module=cls)
    return cls


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
    img_size = cfg.get('img_size')
    probe_size = probe_size or (img_size if isinstance(img_size, int)
                                else 64)
    if sites:
        inject_adapters(model, sites, adapter_cfg, probe_size)
    model.probe_size = probe_size
    return _frozen(model, body_dropout, frozen_with_cp)


def _frozen(model: nn.Module, body_dropout: bool,
            frozen_with_cp: bool = False) -> nn.Module:
    """``model`` as ``MSLoRA<Type>``: everything but its adapters frozen,
    from now on (``freeze_pretrained``)."""
    model.frozen_with_cp = frozen_with_cp
    return freeze_pretrained(model, body_dropout,
                             getattr(model, 'probe_size', 64))


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
                       'FrozenBackbone', build_frozen_backbone,
                       'LoRABackbone'):
        return dict(cfg['backbone'])
    plain_type = getattr(MODELS.get(cfg['type']), 'plain_type', None)
    if plain_type is None:
        return cfg
    for key in ('adapter_cfg', 'adapter_position', 'body_dropout',
                'frozen_with_cp', 'probe_size'):
        cfg.pop(key, None)
    cfg['type'] = plain_type
    return cfg

