"""MSLoRA presets in mmsegmentation configs (``default_scope='mmseg'``):
``MSLoRAResNet`` and ``MSLoRAResNetV1c`` (mmseg's ResNet family, adapters
at the paper's Bottleneck slots) and ``MSLoRASwin`` (mmseg's Swin), the
same mixins as the mmdet presets on mmseg's classes. They are registered in
the root registry, so every scope finds them; mmseg is imported on the
first build in its scope, so ``import mslora_mm`` does not import it. Outside
mmseg's scope the names build the mmdet presets."""
from typing import Callable, Dict, Optional, Tuple, Type

import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

from ...core.freezing import FrozenBackboneMixin, adapted_class
from ...extras import require
from .resnet import MSLoRAResNet, MSLoRAResNetMixin
from .swin import MSLoRASwin, MSLoRASwinMixin

#: preset -> (mmseg backbone class name, mixin, the mmdet preset or None)
SEG_PRESETS: Dict[str, Tuple[str, Type[FrozenBackboneMixin],
                             Optional[type]]] = {
    'MSLoRAResNet': ('ResNet', MSLoRAResNetMixin, MSLoRAResNet),
    'MSLoRAResNetV1c': ('ResNetV1c', MSLoRAResNetMixin, None),
    'MSLoRASwin': ('SwinTransformer', MSLoRASwinMixin, MSLoRASwin),
}


def seg_preset(name: str) -> Type[nn.Module]:
    """The class of preset ``name`` on mmseg's backbone (imports mmseg)."""
    backbones = require('mmseg.models', name).backbones
    plain, mixin, _ = SEG_PRESETS[name]
    base = getattr(backbones, plain)
    return adapted_class(base, mixin, f'mmseg\'s {plain} with MSLoRA '
                         f'adapters and a frozen pretrained body.\n\n'
                         f'{mixin.__doc__}', name)


def _in_mmseg_scope() -> bool:
    scope = DefaultScope.get_current_instance()
    return scope is not None and scope.scope_name == 'mmseg'


def _builder(name: str) -> Callable[..., nn.Module]:
    plain, _, mmdet_preset = SEG_PRESETS[name]

    def build(**kwargs) -> nn.Module:
        if _in_mmseg_scope():
            return seg_preset(name)(**kwargs)
        if mmdet_preset is None:
            raise KeyError(f'{name} is a preset of mmseg\'s {plain}: use it '
                           'in a config with default_scope=\'mmseg\'')
        return mmdet_preset(**kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f'``type=\'{name}\'``: the preset on mmseg\'s {plain} ' \
        'in mmseg\'s scope, else the mmdet preset.'
    build.plain_type = plain
    return build


for _name in SEG_PRESETS:
    ROOT_MODELS.register_module(name=_name, module=_builder(_name))
