from .adapter_file import (AdapterFileError, apply_adapter_file,
                           init_frozen_backbone, load_adapter_file,
                           read_adapter_file, save_adapter_file,
                           trained_state_dict)
from .hook import AdapterCheckpointHook

__all__ = [
    'AdapterFileError', 'AdapterCheckpointHook', 'apply_adapter_file',
    'init_frozen_backbone', 'load_adapter_file', 'read_adapter_file',
    'save_adapter_file', 'trained_state_dict'
]
