"""Safe checkpoint loading for mmengine under torch >= 2.6.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch >= 2.6
then refuses the numpy arrays and ``HistoryBuffer`` objects in mmengine's own
checkpoints. We allow-list exactly those types for ``weights_only=True``
loading and replace mmengine's local-file loader with one that explains a
refusal. Unpickling anything else needs an explicit opt-in per file:
``MSLORA_TRUSTED_CHECKPOINTS=/path/a.pth:/path/b.pth``.
"""
import os
import os.path as osp
import pickle
from typing import Any, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

TRUST_ENV = 'MSLORA_TRUSTED_CHECKPOINTS'


class CheckpointLoadError(RuntimeError):
    """A checkpoint file cannot (or must not) be loaded."""


# HistoryBuffer pickles its statistics as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling: only the
    ``HistoryBuffer`` statistics that mmengine pickles are reachable."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not in the allow-list')


def mmengine_safe_globals() -> List[Any]:
    """Exactly the non-tensor globals that mmengine checkpoints contain,
    under the names numpy 1.x and 2.x pickle them with."""
    from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
        np.uint16, np.uint32, np.uint64, np.float16, np.float32, np.float64)]
    named = [(fn, f'{module}.{fn.__name__}')
             for fn in (_reconstruct, scalar)
             for module in ('numpy.core.multiarray', 'numpy._core.multiarray')]
    return [HistoryBuffer, np.ndarray, np.dtype, *dtypes, *named,
            (_history_buffer_getattr, 'builtins.getattr')]


def trusted_paths() -> List[str]:
    """Real paths listed in ``$MSLORA_TRUSTED_CHECKPOINTS``."""
    return [
        osp.realpath(p) for p in os.environ.get(TRUST_ENV, '').split(
            os.pathsep) if p
    ]


def safe_torch_load(filename: str,
                    map_location: Optional[Any] = None) -> Any:
    """``torch.load`` with ``weights_only=True`` unless the user trusted
    ``filename``; raises :class:`CheckpointLoadError` naming the file, the
    reason and the fix."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    trusted = osp.realpath(filename) in trusted_paths()
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=not trusted)
    except pickle.UnpicklingError:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(
            filename)
        raise CheckpointLoadError(
            f'Refusing to load checkpoint {filename}: it contains pickled '
            'objects other than tensors, containers, numpy arrays and '
            f'mmengine log buffers ({", ".join(unknown) or "see torch"}), '
            'and unpickling those can run arbitrary code. If you trust '
            f'this file, opt in for it alone: export {TRUST_ENV}='
            f'{osp.realpath(filename)}') from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointLoadError(
            f'Checkpoint {filename} is not a readable PyTorch checkpoint '
            f'(truncated or corrupt?): {e}. Re-save or re-download it.'
        ) from None


def install_safe_loading() -> None:
    """Allow-list mmengine's types and route local checkpoint loading
    through :func:`safe_torch_load`."""
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    CheckpointLoader.register_scheme(
        prefixes='', loader=safe_torch_load, force=True)
