"""Checkpoint loading under torch >= 2.6: mmengine's own checkpoints load
with weights_only=True; a planted pickle payload never runs."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.runner import CheckpointLoader

from conftest import ROOT
from helpers import minicoco_config
from mslora_mm.engine import CheckpointLoadError, safe_torch_load
from mslora_mm.engine.safe_load import TRUST_ENV


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
