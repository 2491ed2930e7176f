from .backbones import *  # noqa: F401,F403
from .freezing import (FrozenBatchNorm2d, adapter_modules,
                       adapter_parameter_names, freeze_all_but_adapters)
from .mslora import MSLoRA, LayerNorm2d

__all__ = [
    'MSLoRA', 'LayerNorm2d', 'FrozenBatchNorm2d', 'adapter_modules',
    'adapter_parameter_names', 'freeze_all_but_adapters'
]
