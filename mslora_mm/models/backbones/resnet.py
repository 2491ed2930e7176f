"""MSLoRA presets for mmdet's ResNet family (ResNet, ResNetV1d, ResNeXt and
any subclass): the shared injection mechanism with the paper's sites."""
from typing import Dict, Optional, Sequence, Type

from mmdet.models.backbones import ResNet, ResNetV1d, ResNeXt
from ...core.freezing import FrozenBackboneMixin
from ...core.sites import inject_adapters
from ..injection import (POSITIONS, per_stage, register_adapted_class,
                         resnet_plugins)


class MSLoRAResNetMixin(FrozenBackboneMixin):
    """Adds MSLoRA to a ResNet-family backbone and freezes the rest.

    Bottleneck blocks get the adapter through mmdet's ``plugins`` at
    ``adapter_position`` ('after_conv2': mid width after conv2+norm2+ReLU;
    'after_conv3': after conv3+norm3, before the residual add). BasicBlocks
    (depth 18/34) have no plugin slots and get it on the block output (sites
    ``layer<i>.*``). Equivalent to ``MSLoRABackbone`` with
    ``plugin_position`` or those sites.

    Args:
        depth (int): as for ``ResNet``.
        adapter_cfg (dict, optional): ``MSLoRA`` arguments except
            ``in_channels``; ``rank`` may be one int per stage.
        adapter_position (str): 'after_conv2' (default) or 'after_conv3'.
        body_dropout (bool): dropout/drop-path layers of the frozen body
            (if any) follow ``train()``/``eval()``. Defaults to True.
        frozen_with_cp (bool): blocks hosting adapters recompute their
            frozen forward in backward. Defaults to False.
        **kwargs: every argument of the underlying ResNet class.
    """

    def __init__(self,
                 depth: int,
                 adapter_cfg: Optional[Dict] = None,
                 adapter_position: str = 'after_conv2',
                 plugins: Optional[Sequence[dict]] = None,
                 body_dropout: bool = True,
                 frozen_with_cp: bool = False,
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
        # mmdet's or mmseg's Bottleneck (expansion 4), not a BasicBlock
        is_bottleneck = self.arch_settings[depth][0].expansion > 1
        if is_bottleneck:
            plugins = list(plugins or []) + resnet_plugins(
                adapter_position, ranks, adapter_cfg)
        super().__init__(depth=depth, plugins=plugins, **kwargs)
        if not is_bottleneck:
            inject_adapters(self, [
                dict(pattern=f'{layer}.*', rank=rank)
                for layer, rank in zip(self.res_layers, ranks)
            ], adapter_cfg)
        self.adapter_position = adapter_position
        self.body_dropout = body_dropout
        self.frozen_with_cp = frozen_with_cp
        self.freeze_pretrained()


def register_mslora_resnet(base: Type[ResNet]) -> Type[ResNet]:
    """Create and register ``MSLoRA<Base>`` for any ResNet subclass ``base``.

    Example (in a module listed in your config's ``custom_imports``)::

        MSLoRAMyResNet = register_mslora_resnet(MyResNet)
    """
    return register_adapted_class(
        base, MSLoRAResNetMixin,
        f'{base.__name__} with MSLoRA adapters and a frozen pretrained '
        f'body.\n\n{MSLoRAResNetMixin.__doc__}')


MSLoRAResNet = register_mslora_resnet(ResNet)
MSLoRAResNetV1d = register_mslora_resnet(ResNetV1d)
MSLoRAResNeXt = register_mslora_resnet(ResNeXt)
