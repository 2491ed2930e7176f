from .amp import CPUAmpOptimWrapper, enable_amp
from .distributed import MMCPUDistributedDataParallel, adapt_cfg_to_device
from .optim_constructor import MSLoRAOptimWrapperConstructor
from .safe_load import (CheckpointLoadError, install_safe_loading,
                        safe_torch_load)

__all__ = [
    'CPUAmpOptimWrapper', 'enable_amp', 'MSLoRAOptimWrapperConstructor',
    'MMCPUDistributedDataParallel', 'adapt_cfg_to_device', 'CheckpointLoadError', 'install_safe_loading',
    'safe_torch_load'
]
