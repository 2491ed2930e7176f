"""mslora-mm: MSLoRA adapters for mmdetection."""
from .adapters import (AdapterCheckpointHook, apply_adapter_file,
                       load_adapter_file, save_adapter_file)
from .analysis import count_parameters, format_parameter_table
from .datasets import CheckedCocoDataset
from .checkpoint import install_safe_loading
from .optim import MSLoRAOptimWrapperConstructor
from .models import *  # noqa: F401,F403
from .version import __version__

install_safe_loading()

__all__ = [
    '__version__', 'count_parameters', 'format_parameter_table',
    'MSLoRAOptimWrapperConstructor', 'CheckedCocoDataset',
    'AdapterCheckpointHook', 'apply_adapter_file', 'load_adapter_file',
    'save_adapter_file'
]
