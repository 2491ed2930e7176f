"""mslora-mm: MSLoRA adapters for mmdetection.

With the OpenMMLab stack installed, importing the package registers its
modules (``custom_imports=['mslora_mm']``). With PyTorch alone only
``mslora_mm.core`` is there (docs/new_backbone.md, "outside OpenMMLab").
"""
from .version import __version__

try:
    from .adapters import (AdapterCheckpointHook, apply_adapter_file,
                           load_adapter_file, save_adapter_file)
    from .analysis.cost.params import count_parameters, format_parameter_table
    from .checkpoint import install_safe_loading
    from .datasets import CheckedCocoDataset
    from .models import *  # noqa: F401,F403
    from .optim import MSLoRAOptimWrapperConstructor
except ImportError as e:  # no mmcv/mmdet/mmengine/mmpretrain: the core
    if not (e.name or '').startswith('mm'):
        raise
    _MISSING = e

    def __getattr__(name: str):
        raise ImportError(
            f'mslora_mm.{name} needs the OpenMMLab stack ({_MISSING}); '
            'with PyTorch alone, use mslora_mm.core') from _MISSING
else:
    install_safe_loading()

__all__ = [
    '__version__', 'count_parameters', 'format_parameter_table',
    'MSLoRAOptimWrapperConstructor', 'CheckedCocoDataset',
    'AdapterCheckpointHook', 'apply_adapter_file', 'load_adapter_file',
    'save_adapter_file'
]
