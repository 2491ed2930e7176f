import os
import os.path as osp
import sys

# Parallel workers (pytest-xdist) share the cores: each takes its share of
# threads, and the tools it starts inherit them. With more threads than
# cores OpenMP's threads spin against each other: two workers of 2 threads
# on 2 cores made each Mask R-CNN step of the demo's model 3.5x slower.
# Set before torch is imported. The cores are those this process may run on,
# capped by a cgroup CPU quota (a container's `--cpus`); an OMP_NUM_THREADS
# already set is kept when it is within the share, lowered to it otherwise.


def available_cores(cgroup: str = '/sys/fs/cgroup') -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2
    (``cpu.max``) or v1 (``cfs_quota_us``) quota under ``cgroup``."""
    cores = len(os.sched_getaffinity(0))
    for quota_file, period_file in (
            (f'{cgroup}/cpu.max', None),
            (f'{cgroup}/cpu/cpu.cfs_quota_us',
             f'{cgroup}/cpu/cpu.cfs_period_us')):
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file:
                with open(period_file) as f:
                    fields.append(f.read().strip())
        except OSError:
            continue
        if fields[0] not in ('max', '-1'):
            cores = min(cores, -(-int(fields[0]) // int(fields[1])))
        break
    return max(1, cores)


_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _workers > 1:
    _share = max(1, available_cores() // _workers)
    if int(os.environ.get('OMP_NUM_THREADS') or _share) > _share:
        print(f'OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]} -> {_share}'
              f': {_workers} workers share {available_cores()} cores',
              file=sys.stderr)
    os.environ['OMP_NUM_THREADS'] = str(min(
        _share, int(os.environ.get('OMP_NUM_THREADS') or _share)))

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


@pytest.fixture(autouse=True)
def _tool_time_limit(request):
    """Tell ``run_tool`` this test's pytest-timeout limit (its mark's, else
    pytest.ini's), so that a hung tool is killed, with its output, first."""
    import helpers
    mark = request.node.get_closest_marker('timeout')
    helpers.TEST_TIMEOUT = float(
        mark.args[0] if mark else request.config.getini('timeout'))
    yield


@pytest.fixture
def minicoco():
    return shared_data('minicoco')


@pytest.fixture(scope='session')
def trained_r18(tmp_path_factory) -> dict:
    """The small R-18 MSLoRA Mask R-CNN of ``minicoco_config``, trained and
    tested once per test run through the tools (the parallel workers share
    it: ``made_once``, so a failed first try is tried again, not left
    half-made). Its stand-in
    pretrained R-18 is seeded; training: ``--auto-scale-lr`` and an
    ``AdapterCheckpointHook`` every iteration; testing: ``--out`` and
    ``--show-dir``, one image a batch (no padding shared between images).
    Paths and both tools' output, to read only: a test that trains on
    copies the work dir."""
    from helpers import made_once, minicoco_config, run_tool
    minicoco = shared_data('minicoco')
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent  # this run's folder, shared by its workers

    def make(root) -> dict:
        from mmdet.registry import MODELS
        base = root / 'r18_base.pth'
        torch.manual_seed(5)
        torch.save(MODELS.build(dict(type='ResNet', depth=18)).state_dict(),
                   base)
        config = minicoco_config(
            root, minicoco,
            extra=("model['backbone']['init_cfg'] = dict(_delete_=True, "
                   f"type='Pretrained', checkpoint='{base}')\n"
                   "custom_hooks = [dict(type='AdapterCheckpointHook', "
                   "by_epoch=False, interval=1)]"))
        work = root / 'work'
        trained = run_tool('tools/train.py', config, '--work-dir', str(work),
                           '--auto-scale-lr')
        tested = run_tool('tools/test.py', config, str(work / 'iter_2.pth'),
                          '--work-dir', str(root / 'test'), '--out',
                          str(root / 'preds.pkl'), '--show-dir', 'shown',
                          '--cfg-options', 'test_dataloader.batch_size=1')
        return dict(config=config, base=str(base), work=str(work),
                    checkpoint=str(work / 'iter_2.pth'),
                    test=str(root / 'test'), preds=str(root / 'preds.pkl'),
                    train_out=trained, test_out=tested)

    return made_once(root / 'trained_r18', make)


#: the test files that take longest (CI's durations), started first so that
#: the parallel workers do not end on them; the rest keep their order
LONGEST_FIRST = ('test_demo.py', 'test_shipped_configs_e2e.py',
                 'test_tools_e2e.py', 'test_compare_tuning.py',
                 'test_segmentation.py', 'test_analysis_tools.py',
                 'test_compile.py', 'test_triton_kernels.py',
                 'test_adapter_files.py', 'test_tool_options.py',
                 'test_visualization.py', 'test_efficientnet_lite.py',
                 'test_configs.py')


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
