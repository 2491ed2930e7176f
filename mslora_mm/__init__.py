"""mslora-mm: MSLoRA adapters for mmdetection."""
from .adapters import (AdapterCheckpointHook, apply_adapter_file,
                       load_adapter_file, save_adapter_file)
from .analysis import count_parameters, format_parameter_table
from .datasets import CheckedCocoDataset
from .engine import MSLoRAOptimWrapperConstructor, install_safe_loading
from .models import *  # noqa: F401,F403
from .version import __version__

install_safe_loading()

__all__ = [
    '__version__', 'count_parameters', 'format_parameter_table',
    'MSLoRAOptimWrapperConstructor', 'CheckedCocoDataset',
    'AdapterCheckpointHook', 'apply_adapter_file', 'load_adapter_file',
    'save_adapter_file'
]
