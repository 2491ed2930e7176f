"""Promises the README makes to a newcomer hold."""
import os.path as osp
import re

import torch
from packaging.requirements import Requirement
from packaging.version import Version

from helpers import ROOT


def read(path: str) -> str:
    with open(osp.join(ROOT, path)) as f:
        return f.read()


def test_train_commands_run_in_the_project_environment():
    """`make demo` installs into .venv; the README's train/test commands say
    to activate it before the first `python tools/...`."""
    section = read('README.md').split('## Train and test', 1)[1]
    assert 'source .venv/bin/activate' in section.split(
        'python tools/train.py', 1)[0]
    for script in ('tools/dist_train.sh', 'tools/dist_test.sh'):
        assert '.venv/bin/python' in read(script), script


def test_declared_torch_range_is_stated_and_installed():
    torch_req = Requirement(re.search(r"'(torch[<>=!,.\d]+)'",
                                      read('setup.py')).group(1))
    bounds = {s.operator: s.version for s in torch_req.specifier}
    assert bounds == {'>=': '2.4', '<': '2.14'}
    readme = read('README.md')
    assert 'torch ≥ 2.4 and < 2.14' in readme
    assert Version(torch.__version__.split('+')[0]) in torch_req.specifier
