from .adapter_file import (AdapterFileError, apply_adapter_file,
                           init_frozen_backbone, load_adapter_file,
                           read_adapter_file, save_adapter_file,
                           trained_state_dict)
from .hook import AdapterCheckpointHook
from .schema import FORMAT, FORMATS, AdapterFileMeta

__all__ = [
    'AdapterFileError', 'AdapterFileMeta', 'FORMAT', 'FORMATS',
    'AdapterCheckpointHook', 'apply_adapter_file',
    'init_frozen_backbone', 'load_adapter_file', 'read_adapter_file',
    'save_adapter_file', 'trained_state_dict'
]
