import os
import os.path as osp
import sys

# Parallel workers (pytest-xdist) share the cores: each takes its share of
# threads, and the tools it starts inherit them. With more threads than
# cores OpenMP's threads spin against each other: two workers of 2 threads
# on 2 cores made each Mask R-CNN step of the demo's model 3.5x slower.
# Set before torch is imported; an OMP_NUM_THREADS already set is kept.
_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _workers > 1:
    os.environ.setdefault('OMP_NUM_THREADS', str(max(
        1, len(os.sched_getaffinity(0)) // _workers)))

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from helpers import shared_data  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_scope():
    from mmdet.utils import register_all_modules
    import mslora_mm  # noqa: F401  (registers the plugin)
    register_all_modules(init_default_scope=True)
    torch.manual_seed(0)
    yield


@pytest.fixture
def minicoco():
    return shared_data('minicoco')
