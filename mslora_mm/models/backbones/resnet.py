"""MSLoRA on mmdet's ResNet family (ResNet, ResNetV1d, ResNeXt, subclasses)."""
from typing import Dict, Optional, Sequence, Type

import torch.nn as nn

from mmdet.models.backbones import ResNet, ResNetV1d, ResNeXt
from mmdet.models.backbones.resnet import Bottleneck
from mmdet.registry import MODELS
from ..freezing import FrozenBackboneMixin
from ..mslora import MSLoRA
from .utils import attach_output_adapter, per_stage

POSITIONS = ('after_conv2', 'after_conv3')


class MSLoRAResNetMixin(FrozenBackboneMixin):
    """Adds MSLoRA to a ResNet-family backbone and freezes the rest.

    Bottleneck blocks get the adapter through mmdet's ``plugins`` at
    ``adapter_position`` ('after_conv2': mid width after conv2+norm2+ReLU;
    'after_conv3': after conv3+norm3, before the residual add). BasicBlocks
    (depth 18/34) have no plugin slots and get it on the block output.

    Args:
        depth (int): as for ``ResNet``.
        adapter_cfg (dict, optional): ``MSLoRA`` arguments except
            ``in_channels``; ``rank`` may be one int per stage.
        adapter_position (str): 'after_conv2' (default) or 'after_conv3'.
        body_dropout (bool): dropout/drop-path layers of the frozen body
            (if any) follow ``train()``/``eval()``. Defaults to True.
        **kwargs: every argument of the underlying ResNet class.
    """

    def __init__(self,
                 depth: int,
                 adapter_cfg: Optional[Dict] = None,
                 adapter_position: str = 'after_conv2',
                 plugins: Optional[Sequence[dict]] = None,
                 body_dropout: bool = True,
                 **kwargs) -> None:
        if depth not in self.arch_settings:
            raise KeyError(f'invalid depth {depth} for {type(self).__name__}; '
                           f'use one of {sorted(self.arch_settings)}')
        if adapter_position not in POSITIONS:
            raise ValueError(f'adapter_position={adapter_position!r} is '
                             f'unknown; use one of {POSITIONS}')
        adapter_cfg = dict(adapter_cfg or {})
        ranks = per_stage(
            adapter_cfg.pop('rank', 128), kwargs.get('num_stages', 4))
        is_bottleneck = issubclass(self.arch_settings[depth][0], Bottleneck)
        if is_bottleneck:
            plugins = list(plugins or []) + [
                dict(cfg=dict(type=MSLoRA, rank=rank, **adapter_cfg),
                     position=adapter_position,
                     stages=tuple(j == i for j in range(len(ranks))))
                for i, rank in enumerate(ranks)
            ]
        super().__init__(depth=depth, plugins=plugins, **kwargs)
        if not is_bottleneck:
            for i, layer_name in enumerate(self.res_layers):
                for j, block in enumerate(getattr(self, layer_name)):
                    attach_output_adapter(
                        block,
                        MSLoRA(block.conv2.out_channels, rank=ranks[i],
                               site=f'{layer_name}.{j}', **adapter_cfg))
        self.adapter_position = adapter_position
        self.body_dropout = body_dropout
        self.freeze_pretrained()


_CLASSES: Dict[type, type] = {}


def register_mslora_resnet(base: Type[ResNet]) -> Type[ResNet]:
    """Create and register ``MSLoRA<Base>`` for any ResNet subclass ``base``.

    Example (in a module listed in your config's ``custom_imports``)::

        MSLoRAMyResNet = register_mslora_resnet(MyResNet)
    """
    if base not in _CLASSES:
        cls = type(f'MSLoRA{base.__name__}', (MSLoRAResNetMixin, base),
                   {'__doc__': f'{base.__name__} with MSLoRA adapters and a '
                               f'frozen pretrained body.\n\n'
                               f'{MSLoRAResNetMixin.__doc__}',
                    '__module__': __name__})
        MODELS.register_module(module=cls)
        _CLASSES[base] = cls
    return _CLASSES[base]


MSLoRAResNet = register_mslora_resnet(ResNet)
MSLoRAResNetV1d = register_mslora_resnet(ResNetV1d)
MSLoRAResNeXt = register_mslora_resnet(ResNeXt)
