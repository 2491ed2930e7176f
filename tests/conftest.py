import os.path as osp
import sys

import pytest
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from helpers import MINICOCO  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_scope():
    from mmdet.utils import register_all_modules
    import mslora_mm  # noqa: F401  (registers the plugin)
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    yield


@pytest.fixture
def minicoco():
    if not osp.isdir(MINICOCO):
        pytest.skip(f'minicoco not found at {MINICOCO}')
    return MINICOCO
