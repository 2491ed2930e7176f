"""Safe checkpoint loading for every scheme mmengine's ``CheckpointLoader``
knows.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only`` (local files,
``pavi://``, ``s3://``) or ``torch.hub.load_state_dict_from_url`` with
``weights_only=False`` (``http(s)://`` and the names that resolve to URLs:
``torchvision://``, ``modelzoo://``, ``open-mmlab://``, ``openmmlab://``,
``mmcls://``). :func:`install_safe_loading` re-registers every one of these
schemes so that each resolves its source to a local file (downloading into
torch hub's cache as mmengine does) or a buffer and loads it with
``weights_only=True``, plus an allow-list of exactly the numpy and
``HistoryBuffer`` types in mmengine's own checkpoints.

Unpickling anything else needs an explicit opt-in per *local file*:
``MSLORA_TRUSTED_CHECKPOINTS=/path/a.pth:/path/b.pth`` (for a URL, the
cached file the error names). Nothing is trusted by default, on any scheme.

Supported torch: 2.4 and newer. On an older one (features are detected,
not assumed: no ``torch.serialization.add_safe_globals``) the allow-list
cannot be installed: pure tensor checkpoints (pretrained weights) still load with
``weights_only=True``; mmengine checkpoints with numpy metadata (resume)
are refused with an error that says so.
"""
import io
import os
import os.path as osp
import pickle
import re
from tempfile import TemporaryDirectory
from typing import Any, BinaryIO, List, Optional, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mme_checkpoint

TRUST_ENV = 'MSLORA_TRUSTED_CHECKPOINTS'


class CheckpointLoadError(RuntimeError):
    """A checkpoint file cannot (or must not) be loaded."""


#: checkpoints the project makes rather than downloads: file name -> the
#: command that writes it (``{path}``: where the config expects it)
MADE_BY = {
    'efficientnet-lite0_imagenet.pth':
    'python tools/model_converters/efficientnet_lite0.py {path}',
}


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


def _unsafe_globals(source: Union[str, BinaryIO],
                    error: Exception) -> List[str]:
    """The globals a refused checkpoint needs: from torch's scanner where it
    exists and understands the file (zip format), else from the error."""
    scan = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint',
                   None)
    if scan is not None and isinstance(source, str):
        try:
            return scan(source)
        except Exception:  # legacy (pre-zip) files: read the error instead
            pass
    return sorted(set(re.findall(r'GLOBAL ([\w.]+)', str(error))))


# torch's messages for a zip archive or pickle stream that is cut or damaged
_CORRUPT = ('PytorchStreamReader', 'central directory', 'invalid header',
            'archive is corrupted', 'invalid load key', 'Ran out of input',
            'Unsupported operand', 'unpickling stack', 'magic number', 'EOF')


def _load(source: Union[str, BinaryIO], name: str, trusted: bool,
          map_location: Optional[Any], trust_hint: str) -> Any:
    try:
        return torch.load(source, map_location=map_location,
                          weights_only=not trusted)
    except pickle.UnpicklingError as e:
        unknown = _unsafe_globals(source, e)
        if not unknown and any(m in str(e) for m in _CORRUPT):
            raise _unreadable(name, e) from None
        needs_allow_list = not hasattr(torch.serialization,
                                       'add_safe_globals')
        raise CheckpointLoadError(
            f'Refusing to load checkpoint {name}: it contains pickled '
            'objects other than tensors and containers'
            + ('' if needs_allow_list else
               ', numpy arrays and mmengine log buffers')
            + f' ({", ".join(unknown) or e}), and unpickling those can run '
            'arbitrary code.'
            + (f' (torch {torch.__version__} has no add_safe_globals, so '
               'mmengine\'s numpy metadata cannot be allow-listed; torch >= '
               '2.4 loads it safely.)' if needs_allow_list else '')
            + f' If you trust this file, opt in for it alone: {trust_hint}'
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        if 'CUDA' in str(e) and map_location is None:
            raise CheckpointLoadError(
                f'Checkpoint {name} holds CUDA tensors and this machine has '
                f'no GPU ({e}). Load it with map_location="cpu".') from None
        raise _unreadable(name, e) from None


def _unreadable(name: str, error: Exception) -> CheckpointLoadError:
    return CheckpointLoadError(
        f'Checkpoint {name} is not a readable PyTorch checkpoint (expected a '
        f'file written by torch.save; truncated or corrupt?): '
        f'{type(error).__name__}: {error}. Re-save or re-download it.')


def safe_torch_load(filename: str,
                    map_location: Optional[Any] = None) -> Any:
    """``torch.load`` of a local file with ``weights_only=True`` unless the
    user trusted ``filename``; raises :class:`CheckpointLoadError` naming
    the file, the reason and the fix."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        made_by = MADE_BY.get(osp.basename(filename))
        raise FileNotFoundError(
            f'checkpoint {filename} can not be found.' + (
                ' It is made, not downloaded: run ' +
                made_by.format(path=filename) if made_by else
                ' Check the path (relative paths are relative to the '
                'directory you run from), or point init_cfg.checkpoint at '
                'the file.'))
    real = osp.realpath(filename)
    return _load(filename, filename, real in trusted_paths(), map_location,
                 f'export {TRUST_ENV}={real}')


def cached_download(url: str, model_dir: Optional[str] = None,
                    progress: bool = False) -> str:
    """Local path of ``url`` in torch hub's checkpoint cache (where
    ``torch.hub.load_state_dict_from_url`` keeps it), downloaded if missing;
    in distributed runs rank 0 downloads first."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))

    def fetch() -> None:
        if osp.exists(cached):
            return
        os.makedirs(model_dir, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, cached, progress=progress)
        except OSError as e:  # URLError, timeouts, refused connections
            raise CheckpointLoadError(
                f'Could not download checkpoint {url} ({type(e).__name__}: '
                f'{e}). Without network, copy {osp.basename(cached)} from '
                f'a machine that has it into {model_dir} (torch hub\'s '
                'cache, under $TORCH_HOME), or point the config at a local '
                'copy: --cfg-options model.backbone.init_cfg.checkpoint='
                f'/path/to/{osp.basename(cached)}') from None

    rank, world_size = get_dist_info()
    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    return cached


def load_from_http(url: str, map_location: Optional[Any] = None,
                   model_dir: Optional[str] = None) -> Any:
    """``http(s)://`` checkpoints: the cached download, loaded safely."""
    return safe_torch_load(cached_download(url, model_dir), map_location)


def load_from_torchvision(name: str, map_location: Optional[Any] = None):
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``)."""
    model = name.split('://', 1)[1]
    return load_from_http(mme_checkpoint.get_torchvision_models()[model],
                          map_location)


def load_from_openmmlab(name: str, map_location: Optional[Any] = None):
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: mmengine's model list
    (deprecated names mapped), a URL or a file under mmengine's home."""
    model = name.split('://', 1)[1]
    model = mme_checkpoint.get_deprecated_model_names().get(model, model)
    url = mme_checkpoint.get_external_models()[model]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return safe_torch_load(
        osp.join(mme_checkpoint._get_mmengine_home(), url), map_location)


def load_from_mmcls(name: str, map_location: Optional[Any] = None):
    """``mmcls://NAME``: mmcls's model list, keys converted as mmengine
    does."""
    url = mme_checkpoint.get_mmcls_models()[name.split('://', 1)[1]]
    return mme_checkpoint._process_mmcls_checkpoint(
        load_from_http(url, map_location))


def load_from_pavi(name: str, map_location: Optional[Any] = None):
    """``pavi://PATH``: downloaded to a temporary file, loaded safely."""
    from pavi import modelcloud
    model = modelcloud.get(name[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        path = osp.join(tmp_dir, model.name)
        model.download(path)
        return safe_torch_load(path, map_location)


def load_from_ceph(name: str, map_location: Optional[Any] = None,
                   backend: str = 'petrel'):
    """``s3://`` / ``petrel://``: loaded from memory with
    ``weights_only=True`` (a remote buffer cannot be trusted by path)."""
    from mmengine.fileio import get_file_backend
    data = get_file_backend(name, backend_args={'backend': backend}).get(name)
    with io.BytesIO(data) as buffer:
        return _load(buffer, name, False, map_location,
                     f'download it and export {TRUST_ENV}=LOCAL_COPY')


#: every prefix mmengine 0.10.7 registers, with its safe loader
SAFE_SCHEMES = {
    '': safe_torch_load,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    'pavi://': load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
}


def _allow_list(globals_: List[Any]) -> None:
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4: numpy metadata stays refused
        return
    try:
        add(globals_)
    except (TypeError, AttributeError):  # torch < 2.6: no (obj, name) pairs
        add([g for g in globals_ if not isinstance(g, tuple)])


def install_safe_loading() -> None:
    """Allow-list mmengine's types and route every checkpoint scheme through
    a ``weights_only=True`` loader."""
    _allow_list(mmengine_safe_globals())
    for prefixes, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader,
                                         force=True)


