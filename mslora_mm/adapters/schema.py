"""The adapter file's metadata: one versioned schema object (as peft's
config object is its file schema). Writing emits the newest version;
reading accepts every earlier one."""
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional

from ..core.runtime import without_runtime_keys
from ..version import __version__

#: every format this code reads, oldest first; files are written in the last.
#: v1: content, backbone, adapter_cfg, base_checkpoint, classes, sizes;
#: v2: + ``sites``, the adapted modules of the backbone;
#: v3: + ``base_fingerprint`` and ``base_tensors``, the frozen backbone's
#: content the file was trained on.
FORMATS = ('mslora-mm/adapter-v1', 'mslora-mm/adapter-v2',
           'mslora-mm/adapter-v3')
FORMAT = FORMATS[-1]
CONTENTS = ('adapters', 'adapters+neck+heads')


class AdapterFileError(ValueError):
    """An adapter file does not fit the model it is loaded onto, or is not
    an adapter file."""


@dataclass
class AdapterFileMeta:
    """What an adapter file says about itself (safetensors metadata, one
    JSON value per field).

    Attributes:
        content: 'adapters' (backbone adapters only) or
            'adapters+neck+heads' (everything that was trained).
        backbone: the backbone config, without ``init_cfg``.
        adapter_cfg: the adapters' arguments.
        base_checkpoint: the frozen backbone's checkpoint (``init_cfg``).
        classes: class names of the training data.
        sites: names of the adapted modules in the backbone (v2; None when
            read from a v1 file).
        base_fingerprint: SHA-256 over ``base_tensors`` (v3; None when read
            from an older file, whose base cannot be checked).
        base_tensors: per frozen backbone tensor (state-dict key, adapters
            excluded), a short hash of its shape, dtype and bytes (v3).
        full_state_dict_bytes / backbone_state_dict_bytes: sizes of the
            whole model's and the backbone's state dicts, for comparison.
        mslora_mm_version: the writer's version.
        format: the schema version, one of ``FORMATS``.
    """
    content: str
    backbone: dict = field(default_factory=dict)
    adapter_cfg: dict = field(default_factory=dict)
    base_checkpoint: Optional[str] = None
    classes: Optional[List[str]] = None
    sites: Optional[List[str]] = None
    base_fingerprint: Optional[str] = None
    base_tensors: Optional[Dict[str, str]] = None
    full_state_dict_bytes: int = 0
    backbone_state_dict_bytes: int = 0
    mslora_mm_version: str = __version__
    format: str = FORMAT

    def __post_init__(self) -> None:
        # as JSON holds them (tuples become lists), so that a file's
        # metadata equals what was written
        self.backbone = json.loads(json.dumps(self.backbone, default=str))
        # the method only: runtime options of older files are dropped
        self.adapter_cfg = json.loads(json.dumps(without_runtime_keys(
            self.adapter_cfg, report=False), default=str))

    @property
    def adapters_only(self) -> bool:
        return self.content == 'adapters'

    def to_metadata(self) -> Dict[str, str]:
        """The safetensors metadata: each field as JSON."""
        return {k: json.dumps(v, default=str) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, raw: Dict[str, str], path: str
                      ) -> 'AdapterFileMeta':
        """Read any version in ``FORMATS``; an error naming ``path`` for
        anything else (e.g. Hugging Face's ``{"format": "pt"}``)."""
        decoded = {}
        for key, value in raw.items():
            try:
                decoded[key] = json.loads(value)
            except ValueError:  # a foreign file's plain strings
                decoded[key] = value
        if decoded.get('format') not in FORMATS or \
                decoded.get('content') not in CONTENTS:
            raise AdapterFileError(
                f'{path} is not an MSLoRA adapter file: expected metadata '
                f'format {FORMAT!r} (or an earlier {FORMATS[:-1]}), found '
                f'format {decoded.get("format")!r}. Export one with '
                'tools/adapter.py export CONFIG CHECKPOINT --out '
                'FILE.safetensors; full checkpoints (.pth) load with '
                'load_from.')
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in decoded.items() if k in names})
