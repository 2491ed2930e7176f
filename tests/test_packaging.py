"""OpenMMLab packaging: the model index lists every config family, and
``mim train`` / ``mim test`` run from a fresh (non-editable) install."""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest

from helpers import MINICOCO, ROOT, shared_data
from helpers import minicoco_config

#: config folders whose every config a metafile lists
FAMILIES = ('', 'ablations', 'baselines', 'classification', 'convnext',
            'efficientnet_lite', 'examples', 'retinanet', 'swin')


def test_model_index_lists_every_config_and_loads():
    import modelindex
    index = modelindex.load(osp.join(ROOT, 'model-index.yml'))
    listed = {m.config for m in index.models}
    for config in listed:
        assert osp.isfile(osp.join(ROOT, config)), config
    for family in FAMILIES:
        folder = osp.join('configs', family) if family else 'configs'
        for name in os.listdir(osp.join(ROOT, folder)):
            if name.endswith('.py'):
                assert osp.join(folder, name) in listed, name
    reported = {m.name: m for m in index.models if m.results}
    main = reported['mask_rcnn_r50_mslora_1x']
    assert main.results[0].metrics == {'box AP': 42.9}
    assert 'reported in the paper' in main.metadata.data['Results Source']


def test_mim_cli_starts():
    """openmim is installed with --no-deps (tools/setup_env.sh); every
    dependency its CLI imports must come from requirements/tests.txt."""
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    proc = subprocess.run([mim, '--version'], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '0.3.9' in proc.stdout


@pytest.mark.slow
def test_mim_train_and_test_from_an_installed_package(tmp_path):
    """Build and install the package (no editable link) into a folder,
    then `mim train mslora_mm CONFIG` and `mim test mslora_mm CONFIG
    --checkpoint ...` run the installed copy's tools."""
    shared_data('minicoco')
    files = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
        capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / 'src'
    for f in files:  # a clean tree: the build writes mslora_mm/.mim there
        if osp.isfile(osp.join(ROOT, f)):
            os.makedirs(src / osp.dirname(f), exist_ok=True)
            shutil.copy2(osp.join(ROOT, f), src / f)
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                    '--no-build-isolation', '--target', str(site), str(src)],
                   check=True, capture_output=True)
    mim_dir = site / 'mslora_mm' / '.mim'
    for shipped in ('tools/train.py', 'tools/test.py', 'model-index.yml',
                    'configs/mask_rcnn_r50_mslora_1x.py'):
        assert osp.isfile(mim_dir / shipped), shipped
        assert not osp.islink(mim_dir / shipped)
    # the fused kernel's source, compiled on first use
    assert osp.isfile(site / 'mslora_mm' / 'core' / 'csrc' /
                      'multiscale_dw.cpp')
    env = dict(os.environ, PYTHONPATH=str(site))
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    cfg = minicoco_config(tmp_path, MINICOCO)
    work = tmp_path / 'work'

    def run(*args):
        proc = subprocess.run([mim, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return out

    out = run('train', 'mslora_mm', cfg, '--gpus', '0', '--work-dir',
              str(work))
    assert str(mim_dir / 'tools' / 'train.py') in out
    assert osp.isfile(work / 'iter_2.pth')
    out = run('test', 'mslora_mm', cfg, '--checkpoint',
              str(work / 'iter_2.pth'), '--gpus', '0', '--work-dir',
              str(tmp_path / 'test'))
    assert str(mim_dir / 'tools' / 'test.py') in out
    assert 'coco/bbox_mAP:' in out
