from .distributed import MMCPUDistributedDataParallel, adapt_cfg_to_device
from .optim_constructor import MSLoRAOptimWrapperConstructor
from .safe_load import (CheckpointLoadError, install_safe_loading,
                        safe_torch_load)

__all__ = [
    'MSLoRAOptimWrapperConstructor', 'MMCPUDistributedDataParallel',
    'adapt_cfg_to_device', 'CheckpointLoadError', 'install_safe_loading',
    'safe_torch_load'
]
