"""MSLoRA with PyTorch alone (no mmcv, mmdet, mmengine or mmpretrain):
the adapter, the site mechanism for any ``nn.Module`` backbone, the
freezing policy, the activation-free frozen layers and the native kernel.

    from mslora_mm.core import inject_adapters, freeze_pretrained
    inject_adapters(backbone, ['layer*.*'], dict(rank=64))
    freeze_pretrained(backbone)   # only the adapters train
"""
from .freezing import FrozenBackboneMixin, adapted_class
from .frozen_layers import (FrozenBatchNorm2d, FrozenConv2d, FrozenLinear,
                            MaskReLU, convert_frozen_layers,
                            restore_stock_layers)
from .mona import Mona
from .mslora import (MSLoRA, SiteAdapter, adapter_modules,
                     adapter_parameter_names, is_adapter_key, unwrap_model)
from .sites import (AdapterSite, disable_adapters, freeze_pretrained,
                    inject_adapters, remove_adapters)

__all__ = [
    'MSLoRA', 'Mona', 'SiteAdapter', 'AdapterSite', 'inject_adapters',
    'freeze_pretrained', 'disable_adapters', 'remove_adapters',
    'adapter_modules', 'adapter_parameter_names', 'is_adapter_key',
    'unwrap_model', 'FrozenBackboneMixin', 'adapted_class', 'FrozenConv2d',
    'FrozenLinear', 'FrozenBatchNorm2d', 'MaskReLU', 'convert_frozen_layers',
    'restore_stock_layers'
]
