from .backbones import *  # noqa: F401,F403
from .freezing import freeze_all_but_adapters
from .frozen_layers import (FrozenBatchNorm2d, FrozenConv2d, FrozenLinear,
                            FrozenWindowMSA, MaskReLU, convert_frozen_layers)
from .injection import (AdapterSite, build_frozen_backbone,
                        build_mslora_backbone, disable_adapters,
                        inject_adapters, plain_backbone_config,
                        remove_adapters)
from .mslora import (LayerNorm2d, MSLoRA, adapter_modules,
                     adapter_parameter_names, is_adapter_key, unwrap_model)

__all__ = [
    'MSLoRA', 'LayerNorm2d', 'FrozenBatchNorm2d', 'FrozenConv2d',
    'FrozenLinear', 'FrozenWindowMSA', 'MaskReLU', 'convert_frozen_layers',
    'adapter_modules', 'adapter_parameter_names', 'freeze_all_but_adapters', 'AdapterSite',
    'build_frozen_backbone', 'build_mslora_backbone', 'inject_adapters',
    'plain_backbone_config', 'disable_adapters', 'remove_adapters',
    'is_adapter_key', 'unwrap_model'
]
