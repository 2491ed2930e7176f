"""Adapter files: only what was trained, in safetensors, with metadata.

A detector trained with MSLoRA consists of a frozen pretrained backbone
(which every user already has, through ``backbone.init_cfg``) and what was
trained: the backbone adapters, the neck and the heads. An adapter file holds
the latter (or, with ``adapters_only``, just the backbone adapters), and a
fingerprint of the frozen backbone it was trained on: loading refuses a model
whose frozen backbone holds other weights, whatever its checkpoint is called.
"""
import hashlib
import logging
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.log import log
from ..core.mslora import adapter_modules, is_adapter_key, unwrap_model
from .schema import AdapterFileError, AdapterFileMeta


def _inner(model: nn.Module) -> nn.Module:
    """The model inside its wrappers: DDP, FSDP and mmengine's, test-time
    augmentation models (``DetTTAModel``, ``SegTTAModel``) included."""
    from mmengine.model import is_model_wrapper
    model = unwrap_model(model)
    while is_model_wrapper(model):
        model = unwrap_model(model.module)
    return model


def _adapter_keys(model: nn.Module) -> set:
    """State-dict keys (``backbone.``-prefixed) of the backbone adapters."""
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        return set()
    return {f'backbone.{name}.{k}' for name, adapter in
            adapter_modules(backbone) for k in adapter.state_dict()}


def _select_trained(state: Dict[str, torch.Tensor], adapters: set,
                    adapters_only: bool) -> Dict[str, torch.Tensor]:
    return {
        k: v for k, v in state.items()
        if k in adapters or (not adapters_only
                             and not k.startswith('backbone.'))
    }


def trained_state_dict(model: nn.Module,
                       adapters_only: bool = False) -> Dict[str, torch.Tensor]:
    """The state-dict entries that training changes: backbone adapters, and
    (unless ``adapters_only``) everything outside the backbone."""
    model = _inner(model)
    return _select_trained(model.state_dict(), _adapter_keys(model),
                           adapters_only)


def frozen_backbone_hashes(model: nn.Module) -> Dict[str, str]:
    """Per frozen backbone tensor of ``model`` (its ``backbone.``-prefixed
    state-dict keys in state-dict order; adapters and BatchNorm's
    ``num_batches_tracked``, which no output depends on, excluded): the first
    16 hex digits of the SHA-256 of its shape, dtype and bytes."""
    model = _inner(model)
    adapters = _adapter_keys(model)
    hashes = {}
    for key, value in model.backbone.state_dict(prefix='backbone.').items():
        if key in adapters or key.endswith('num_batches_tracked'):
            continue
        value = value.detach().cpu().contiguous().reshape(-1)
        digest = hashlib.sha256(
            f'{tuple(value.shape)}{value.dtype}'.encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
        hashes[key] = digest.hexdigest()[:16]
    return hashes


def backbone_fingerprint(hashes: Dict[str, str]) -> str:
    """One SHA-256 over ``frozen_backbone_hashes`` (names and hashes, in
    sorted order): equal exactly when every frozen tensor is."""
    return hashlib.sha256(''.join(
        f'{k}={v}\n' for k, v in sorted(hashes.items())).encode()).hexdigest()


def _metadata(model: nn.Module, cfg: Optional[Config], adapters_only: bool,
              classes: Optional[tuple]) -> AdapterFileMeta:
    """The file's metadata for ``model``: the backbone config and adapter
    arguments from ``cfg``, the base checkpoint and the adapted sites from
    the built backbone (wherever its config nests them)."""
    backbone, adapter_cfg, base_checkpoint = {}, {}, None
    if cfg is not None:
        backbone = dict(cfg.model.backbone)
        backbone.pop('init_cfg', None)
        adapter_cfg = dict(backbone.pop('adapter_cfg', {}) or {})
        init_cfg = getattr(model.backbone, 'init_cfg', None)
        if isinstance(init_cfg, dict):
            base_checkpoint = init_cfg.get('checkpoint')
    state = model.state_dict()
    hashes = frozen_backbone_hashes(model)
    return AdapterFileMeta(
        content='adapters' if adapters_only else 'adapters+neck+heads',
        backbone=backbone, adapter_cfg=adapter_cfg,
        base_checkpoint=base_checkpoint,
        classes=list(classes) if classes else None,
        sites=[name.rpartition('.')[0]
               for name, _ in adapter_modules(model.backbone)],
        base_fingerprint=backbone_fingerprint(hashes), base_tensors=hashes,
        full_state_dict_bytes=sum(v.numel() * v.element_size()
                                  for v in state.values()),
        backbone_state_dict_bytes=sum(
            v.numel() * v.element_size() for k, v in state.items()
            if k.startswith('backbone.')))


def save_adapter_file(model: nn.Module, path: str,
                      cfg: Optional[Config] = None,
                      adapters_only: bool = False,
                      classes: Optional[tuple] = None) -> AdapterFileMeta:
    """Write the trained tensors of ``model`` to ``path`` (safetensors, the
    newest format) and return the metadata written with them. The one
    writer of adapter files (``AdapterCheckpointHook``, ``tools/adapter.py
    export``)."""
    model = _inner(model)
    adapters = _adapter_keys(model)
    if not adapters:
        raise AdapterFileError(
            f'{type(model).__name__} has no MSLoRA adapters to export to '
            f'{path}; build it with an MSLoRA backbone.')
    tensors = {k: v.detach().cpu().contiguous() for k, v in _select_trained(
        model.state_dict(), adapters, adapters_only).items()}
    meta = _metadata(model, cfg, adapters_only, classes)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=meta.to_metadata())
    return meta


def read_adapter_file(path: str
                      ) -> Tuple[Dict[str, torch.Tensor], AdapterFileMeta]:
    """Return ``(tensors, metadata)`` of an adapter file of any format
    version, with clear errors for a missing, truncated or foreign file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'adapter file {path} can not be found.')
    try:
        with safe_open(path, 'pt') as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise AdapterFileError(
            f'{path} is not a readable safetensors adapter file (truncated '
            f'or corrupt?): {e}. Re-export it with tools/adapter.py export.'
        ) from None
    meta = AdapterFileMeta.from_metadata(raw, path)
    if not any(is_adapter_key(k) for k in tensors):
        raise AdapterFileError(
            f'{path} is not an MSLoRA adapter file: its {len(tensors)} '
            f'tensors ({", ".join(sorted(tensors)[:3])}) hold no adapter. '
            'Export one with tools/adapter.py export.')
    return tensors, meta


def load_adapter_file(model: nn.Module, path: str,
                      allow_other_base: bool = False) -> AdapterFileMeta:
    """Load an adapter file onto ``model`` (whose frozen backbone already
    holds its pretrained weights); returns the file's metadata.

    Raises :class:`AdapterFileError` naming every key whose shape differs
    and every key that the model lacks or the file should have had, or
    (unless ``allow_other_base``, which loads with a warning) naming the
    first frozen backbone tensor that differs from the file's base.
    """
    tensors, metadata = read_adapter_file(path)
    _load_tensors(model, path, tensors, metadata, allow_other_base)
    return metadata


def _base_option(metadata: AdapterFileMeta) -> str:
    """The config key of the file's base checkpoint: the backbone's
    ``init_cfg``, or the wrapped one's (``MSLoRABackbone``)."""
    nested = isinstance(metadata.backbone.get('backbone'), dict)
    return 'model.backbone.' + ('backbone.' if nested else '') + \
        'init_cfg.checkpoint'


def check_base(model: nn.Module, path: str, metadata: AdapterFileMeta,
               allow_other_base: bool = False) -> None:
    """Compare the frozen backbone of ``model`` with the one the file at
    ``path`` was trained on (``metadata.base_tensors``).

    Raises :class:`AdapterFileError` naming the file's base, the model's,
    the first differing tensor and the fix, unless ``allow_other_base``
    (then it logs that as a warning). A file without a fingerprint (written
    before format v3) is logged in one line as unchecked.
    """
    if metadata.base_tensors is None:
        log(f'{path} ({metadata.format}) carries no fingerprint of its base '
            f'{metadata.base_checkpoint}: its frozen backbone cannot be '
            'checked; re-export it with tools/adapter.py export to bind it.',
            logging.WARNING)
        return
    ours = frozen_backbone_hashes(model)
    if backbone_fingerprint(ours) == metadata.base_fingerprint:
        return
    theirs = metadata.base_tensors
    differ = [k for k in theirs if ours.get(k) != theirs[k]] + \
        [k for k in ours if k not in theirs]
    backbone = _inner(model).backbone
    init_cfg = backbone.init_cfg if isinstance(backbone.init_cfg, dict) \
        else {}
    model_base = getattr(backbone, '_mslora_base_checkpoint',
                         init_cfg.get('checkpoint'))
    option = _base_option(metadata)
    first = differ[0] if differ else '(none: fingerprint altered)'
    message = (
        f'{path} was trained on the frozen backbone of '
        f'{metadata.base_checkpoint} (fingerprint '
        f'{metadata.base_fingerprint[:12]}); this model\'s frozen backbone '
        f'(from {model_base}, fingerprint {backbone_fingerprint(ours)[:12]}) '
        f'holds other weights: {len(differ)} of {len(theirs)} tensors '
        f'differ, first {first}. Evaluate it on its base: --cfg-options '
        f'{option}={metadata.base_checkpoint}')
    if allow_other_base:
        log(f'{message} (loading anyway: allow_other_base)', logging.WARNING)
        return
    raise AdapterFileError(
        f'{message}; or, knowingly, load it onto this base with '
        '--allow-other-base (allow_other_base=True).')


def _load_tensors(model: nn.Module, path: str,
                  tensors: Dict[str, torch.Tensor],
                  metadata: AdapterFileMeta,
                  allow_other_base: bool = False) -> None:
    model = _inner(model)
    expected = trained_state_dict(model,
                                  adapters_only=metadata.adapters_only)
    problems = []
    for k in sorted(set(tensors) - set(expected)):
        problems.append(f'unexpected {k} {tuple(tensors[k].shape)}')
    for k in sorted(set(expected) - set(tensors)):
        problems.append(f'missing {k} {tuple(expected[k].shape)}')
    for k in sorted(set(tensors) & set(expected)):
        if tensors[k].shape != expected[k].shape:
            problems.append(f'{k}: file {tuple(tensors[k].shape)} vs model '
                            f'{tuple(expected[k].shape)}')
    if problems:
        shown = '\n  '.join(problems[:20])
        more = f'\n  ... {len(problems) - 20} more' if len(problems) > 20 \
            else ''
        raise AdapterFileError(
            f'{path} does not fit this model ({len(problems)} problems; the '
            f'file was made for backbone {metadata.backbone} with '
            f'adapter_cfg {metadata.adapter_cfg}):\n  {shown}{more}\n'
            'Use the config the file was exported with.')
    check_base(model, path, metadata, allow_other_base)
    model.load_state_dict(tensors, strict=False)


def init_frozen_backbone(model: nn.Module) -> None:
    """Give the frozen backbone its pretrained weights from
    ``backbone.init_cfg`` (mmengine's test path never calls
    ``init_weights``), refusing to leave any of them random. Does nothing
    when the backbone already holds that checkpoint (loaded here or by
    ``init_weights``), so adapter files can be swapped on one model."""
    model = _inner(model)
    backbone = model.backbone
    init_cfg = backbone.init_cfg if isinstance(backbone.init_cfg, dict) \
        else {}
    checkpoint = init_cfg.get('checkpoint')
    if init_cfg.get('type') != 'Pretrained' or not checkpoint:
        raise AdapterFileError(
            f'model.backbone.init_cfg is {backbone.init_cfg}: the frozen '
            'backbone would be randomly initialised. Set model.backbone.'
            "init_cfg=dict(type='Pretrained', checkpoint=...) to the base "
            'checkpoint the adapters were trained on.')
    loaded = getattr(backbone, '_mslora_base_checkpoint',
                     checkpoint if backbone.is_init else None)
    if loaded == checkpoint:
        return
    # Every frozen conv/linear weight must be written by the checkpoint:
    # loading bumps a tensor's version counter, so any unchanged one was not
    # covered by it.
    adapters = _adapter_keys(model)
    frozen = {k: v for k, v in backbone.state_dict(prefix='backbone.').items()
              if k not in adapters and v.is_floating_point() and v.dim() >= 2}
    versions = {k: v._version for k, v in frozen.items()}
    backbone._is_init = False  # mmengine initialises a module only once
    backbone.init_weights()
    untouched = [k for k, v in frozen.items() if v._version == versions[k]]
    if untouched:
        raise AdapterFileError(
            f'base checkpoint {checkpoint} left {len(untouched)} frozen '
            f'backbone tensors uninitialised (e.g. {untouched[:5]}); it does '
            f'not match {type(backbone).__name__}. Point model.backbone.'
            'init_cfg at the right checkpoint.')
    backbone._mslora_base_checkpoint = checkpoint


def apply_adapter_file(model: nn.Module, path: str,
                       allow_other_base: bool = False) -> AdapterFileMeta:
    """Pretrained backbone from ``init_cfg`` (loaded once per model) + the
    adapter file on top: the model is ready to evaluate. Applying another
    file replaces every tensor the first one set. Returns the metadata.
    Refuses a backbone other than the file's base as ``load_adapter_file``
    does (``allow_other_base``: load with a warning)."""
    tensors, metadata = read_adapter_file(path)
    if metadata.adapters_only:
        raise AdapterFileError(
            f'{path} holds backbone adapters only; the neck and heads would '
            'be random. Evaluate a file exported without --adapters-only, or '
            'fine-tune from this backbone adaptation.')
    init_frozen_backbone(model)
    _load_tensors(model, path, tensors, metadata, allow_other_base)
    return metadata
