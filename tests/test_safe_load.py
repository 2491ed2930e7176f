"""Checkpoint loading under torch >= 2.6: mmengine's own checkpoints load
with weights_only=True; a planted pickle payload never runs."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.runner import CheckpointLoader

from helpers import ROOT
from helpers import minicoco_config, run_tool
from mslora_mm.checkpoint import (TRUST_ENV, CheckpointLoadError,
                                  safe_torch_load)


class Payload:
    """Unpickling this writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')", ))


@pytest.fixture
def planted(tmp_path):
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)},
                'meta': Payload(str(marker))}, path)
    return str(path), marker


def test_mmengine_style_checkpoint_loads(tmp_path):
    import numpy as np
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(np.float64(1.5))
    ckpt = {'meta': {'epoch': 1, 'seed': np.int64(3), 'arr': np.zeros(2),
                     'classes': ('a', 'b')},
            'message_hub': {'log_scalars': {'loss': buf}},
            'state_dict': {'w': torch.ones(2)}}
    path = tmp_path / 'ok.pth'
    torch.save(ckpt, path)
    loaded = CheckpointLoader.load_checkpoint(str(path))
    assert loaded['meta']['seed'] == 3
    assert loaded['message_hub']['log_scalars']['loss'].current() == 1.5


def test_planted_payload_refused(planted, monkeypatch):
    path, marker = planted
    for load in (lambda: safe_torch_load(path),
                 lambda: CheckpointLoader.load_checkpoint(path)):
        with pytest.raises(CheckpointLoadError) as err:
            load()
        assert 'arbitrary code' in str(err.value)
        assert TRUST_ENV in str(err.value)
        assert not marker.exists()
    # opting in for this one file is explicit (and runs the payload)
    monkeypatch.setenv(TRUST_ENV, path)
    safe_torch_load(path)
    assert marker.exists()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub directory: URL checkpoints are served from its
    ``checkpoints/`` cache, so nothing is downloaded."""
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub))
    (hub / 'checkpoints').mkdir(parents=True)
    return hub / 'checkpoints'


def remote_names():
    """A name per URL-resolving scheme, with the URL it resolves to."""
    from mmengine.runner import checkpoint as ck
    return {
        'https://example.invalid/models/evil.pth':
        'https://example.invalid/models/evil.pth',
        'torchvision://resnet50': ck.get_torchvision_models()['resnet50'],
        'modelzoo://resnet50': ck.get_torchvision_models()['resnet50'],
        'open-mmlab://detectron2/resnet50_caffe':
        ck.get_external_models()['detectron2/resnet50_caffe'],
        'mmcls://resnet50': ck.get_mmcls_models()['resnet50'],
    }


@pytest.mark.parametrize('name', list(remote_names()))
def test_remote_schemes_load_weights_only(name, planted, hub_cache):
    """Every scheme that resolves to a URL loads the cached file with
    weights_only=True: the planted payload is refused and never runs, plain
    weights load."""
    path, marker = planted
    cached = hub_cache / osp.basename(remote_names()[name])
    cached.write_bytes(open(path, 'rb').read())
    with pytest.raises(CheckpointLoadError) as err:
        CheckpointLoader.load_checkpoint(name)
    assert 'arbitrary code' in str(err.value) and str(cached) in str(err.value)
    assert not marker.exists()
    torch.save({'state_dict': {'backbone.w': torch.ones(2)}}, cached)
    loaded = CheckpointLoader.load_checkpoint(name)['state_dict']
    # mmcls:// strips the classifier's 'backbone.' prefix, as mmengine does
    key = 'w' if name.startswith('mmcls://') else 'backbone.w'
    assert torch.equal(loaded[key], torch.ones(2))


def test_every_mmengine_scheme_is_guarded():
    """No scheme is left with mmengine's own (weights_only=False) loader."""
    import mmengine.runner.checkpoint as mme
    from mslora_mm.checkpoint import SAFE_SCHEMES
    ours = set(SAFE_SCHEMES.values())
    assert CheckpointLoader._schemes, 'no schemes registered'
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader in ours, (prefix, loader)
        assert getattr(mme, loader.__name__, None) is not loader


def test_legacy_format_payload_is_refused_by_name(tmp_path):
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'legacy.pth'
    torch.save({'meta': Payload(str(marker))}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointLoadError,
                       match=r'Refusing .*legacy.pth.*\((builtins\.)?exec\)'):
        safe_torch_load(str(path))
    assert not marker.exists()


def test_other_load_errors_say_what_is_wrong(tmp_path, monkeypatch):
    path = tmp_path / 'ok.pth'
    torch.save({'w': torch.ones(1)}, path)

    def cuda_only(*args, **kwargs):
        raise RuntimeError('Attempting to deserialize object on a CUDA '
                           'device but torch.cuda.is_available() is False.')

    monkeypatch.setattr(torch, 'load', cuda_only)
    with pytest.raises(CheckpointLoadError,
                       match=r'ok.pth holds CUDA tensors.*map_location'):
        safe_torch_load(str(path))
    monkeypatch.undo()
    (tmp_path / 'page.pth').write_text('<html>404 Not Found</html>')
    with pytest.raises(CheckpointLoadError,
                       match=r'page.pth is not a readable PyTorch checkpoint'):
        safe_torch_load(str(tmp_path / 'page.pth'))


def test_torch_without_safe_globals_api(tmp_path, monkeypatch):
    """torch < 2.4 (no add_safe_globals / unsafe-globals scanner): import and
    the guard still work, weights_only=True is passed explicitly, plain
    weights load, numpy metadata and payloads are refused with a reason."""
    import numpy as np
    import mslora_mm.checkpoint as safe_load
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        monkeypatch.delattr(torch.serialization, 'add_safe_globals')
        monkeypatch.delattr(torch.serialization,
                            'get_unsafe_globals_in_checkpoint')
        calls = []
        real_load = torch.load

        def recording_load(*args, **kwargs):
            calls.append(kwargs.get('weights_only'))
            return real_load(*args, **kwargs)

        monkeypatch.setattr(torch, 'load', recording_load)
        safe_load.install_safe_loading()
        plain = tmp_path / 'plain.pth'
        torch.save({'state_dict': {'w': torch.ones(2)}}, plain)
        assert CheckpointLoader.load_checkpoint(str(plain))['state_dict'][
            'w'].sum() == 2
        assert calls == [True]
        meta = tmp_path / 'meta.pth'
        torch.save({'meta': {'arr': np.zeros(2)}}, meta)
        with pytest.raises(CheckpointLoadError, match='torch >= 2.4'):
            safe_torch_load(str(meta))
        marker = tmp_path / 'PWNED'
        evil = tmp_path / 'evil.pth'
        torch.save({'meta': Payload(str(marker))}, evil)
        with pytest.raises(CheckpointLoadError, match=r'\((builtins\.)?exec\)'):
            safe_torch_load(str(evil))
        assert not marker.exists()
    finally:
        torch.serialization.clear_safe_globals()
        monkeypatch.undo()
        torch.serialization.add_safe_globals(saved)


def test_torch_without_named_safe_globals(monkeypatch):
    """torch 2.4/2.5: add_safe_globals takes no (object, name) pairs."""
    import mslora_mm.checkpoint as safe_load
    added = []

    def old_add(globals_):
        if any(isinstance(g, tuple) for g in globals_):
            raise TypeError('expected callables')
        added.extend(globals_)

    monkeypatch.setattr(torch.serialization, 'add_safe_globals', old_add)
    safe_load.install_safe_loading()
    assert added and not any(isinstance(g, tuple) for g in added)


def test_truncated_and_missing(tmp_path):
    path = tmp_path / 'ok.pth'
    torch.save({'state_dict': {'w': torch.ones(1000)}}, path)
    data = path.read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointLoadError, match='truncated or corrupt'):
        safe_torch_load(str(tmp_path / 'cut.pth'))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        safe_torch_load(str(tmp_path / 'missing.pth'))


@pytest.mark.slow
@pytest.mark.parametrize('entry',
                         ['test', 'resume', 'load_from', 'adapter_export'])
def test_tools_refuse_planted_checkpoint(entry, planted, tmp_path, minicoco):
    path, marker = planted
    cfg = minicoco_config(tmp_path, minicoco)
    args = {
        'test': ['tools/test.py', cfg, path],
        'resume': ['tools/train.py', cfg, '--resume', path],
        'load_from': ['tools/train.py', cfg, '--cfg-options',
                      f'load_from={path}'],
        'adapter_export': ['tools/adapter.py', 'export', cfg, path, '--out',
                           str(tmp_path / 'w' / 'a.safetensors')],
    }[entry]
    if entry != 'adapter_export':
        args += ['--work-dir', str(tmp_path / 'w')]
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT,
        capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert 'Refusing to load checkpoint' in proc.stderr + proc.stdout
    assert not marker.exists()
    assert not osp.isfile(tmp_path / 'w' / 'iter_2.pth')
    assert not osp.isfile(tmp_path / 'w' / 'a.safetensors')


def test_missing_made_checkpoint_names_its_converter(tmp_path):
    """A converted checkpoint the project makes (not downloads) names the
    command that writes it."""
    path = tmp_path / 'checkpoints' / 'efficientnet-lite0_imagenet.pth'
    with pytest.raises(FileNotFoundError) as e:
        safe_torch_load(str(path))
    assert 'python tools/model_converters/efficientnet_lite0.py ' \
        f'{path}' in str(e.value)


def test_unreachable_network_names_url_file_and_cache(tmp_path):
    """``torchvision://resnet50`` without network (a proxy nobody listens
    on): the error names the URL, the file, the cache folder where it is
    expected and how to point ``init_cfg.checkpoint`` at a local copy."""
    script = (
        'import mslora_mm\n'
        'from mmengine.runner import CheckpointLoader\n'
        "CheckpointLoader.load_checkpoint('torchvision://resnet50')\n")
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'),
               https_proxy='http://127.0.0.1:9', http_proxy='http://127.0.0.1:9',
               HTTPS_PROXY='http://127.0.0.1:9', HTTP_PROXY='http://127.0.0.1:9',
               no_proxy='', NO_PROXY='')
    out = run_tool(sys.executable, '-c', script, ok=False, env=env)
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    assert 'Could not download checkpoint https://download.pytorch.org/' \
        'models/resnet50-' in out, out[-2000:]
    assert f'into {cache}' in out
    assert 'model.backbone.init_cfg.checkpoint=/path/to/resnet50-' in out
