"""The OpenMMLab integration of the core: MSLoRA and Mona in mmdet's
``MODELS``, the mmcv/mmdet layers in the core's tables, the backbone
builders, the presets and the LoRA peer."""
from mmdet.registry import MODELS
from mmengine.registry import MODELS as ROOT_MODELS
from ..core import (FrozenBatchNorm2d, FrozenConv2d, FrozenLinear, MaskReLU,
                    Mona, MSLoRA, SiteAdapter, adapter_modules,
                    adapter_parameter_names, convert_frozen_layers,
                    disable_adapters, freeze_pretrained, inject_adapters,
                    is_adapter_key, remove_adapters, unwrap_model)
from ..core.freezing import freeze_all_but_adapters
from ..core.mslora import LayerNorm2d
from ..core.sites import AdapterSite
from .frozen_swin import FrozenWindowMSA
from .injection import (build_frozen_backbone, build_mslora_backbone,
                        plain_backbone_config)
from .peft_lora import build_lora_backbone
from .backbones import *  # noqa: F401,F403,E402  (after the tables)

MODELS.register_module(module=MSLoRA)
MODELS.register_module(module=Mona)
# and in the root: every scope's plugins and sites find them (mmseg's too)
ROOT_MODELS.register_module(module=MSLoRA)
ROOT_MODELS.register_module(module=Mona)

__all__ = [
    'MSLoRA', 'Mona', 'SiteAdapter', 'LayerNorm2d', 'FrozenBatchNorm2d',
    'FrozenConv2d', 'FrozenLinear', 'FrozenWindowMSA', 'MaskReLU',
    'convert_frozen_layers', 'adapter_modules', 'adapter_parameter_names',
    'freeze_all_but_adapters', 'freeze_pretrained', 'AdapterSite',
    'build_frozen_backbone', 'build_mslora_backbone', 'build_lora_backbone',
    'inject_adapters', 'plain_backbone_config', 'disable_adapters',
    'remove_adapters', 'is_adapter_key', 'unwrap_model',
    'register_mslora_resnet'
]
