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
    cfg = minicoco_config(tmp_path, MINICOCO, max_iters=1)
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
    assert osp.isfile(work / 'iter_1.pth')
    out = run('test', 'mslora_mm', cfg, '--checkpoint',
              str(work / 'iter_1.pth'), '--gpus', '0', '--work-dir',
              str(tmp_path / 'test'))
    assert str(mim_dir / 'tools' / 'test.py') in out
    assert 'coco/bbox_mAP:' in out


def test_the_package_parses_under_the_python_floor_it_claims():
    """setup.py says python_requires>=3.8 (and the README Python ≥ 3.8):
    every module of the package and its tools parses with Python 3.8's
    grammar (no match statements, parenthesised context managers, ...;
    ``ast``'s ``feature_version`` check). Type hints are not evaluated here:
    modules that use newer annotations import ``from __future__``."""
    import ast
    import glob
    files = glob.glob(osp.join(ROOT, 'mslora_mm', '**', '*.py'),
                      recursive=True) + glob.glob(
                          osp.join(ROOT, 'tools', '**', '*.py'),
                          recursive=True)
    assert len(files) > 40
    builtins = {'list', 'dict', 'tuple', 'set', 'frozenset', 'type'}
    late = []  # annotations Python 3.8 cannot evaluate at definition time
    for path in files:
        with open(path) as f:
            tree = ast.parse(f.read(), path, feature_version=(3, 8))
        if any(isinstance(n, ast.ImportFrom) and n.module == '__future__'
               for n in tree.body):
            continue
        for node in ast.walk(tree):
            notes = [node.returns] + [a.annotation for a in (
                node.args.args + node.args.kwonlyargs)] if isinstance(
                    node, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
            for note in filter(None, notes):
                for part in ast.walk(note):
                    if isinstance(part, ast.BinOp) and isinstance(
                            part.op, ast.BitOr) or isinstance(
                                part, ast.Subscript) and isinstance(
                                    part.value, ast.Name) and \
                            part.value.id in builtins:
                        late.append(f'{path}:{node.lineno}')
    assert late == []
