"""The suite's parallel workers (pytest-xdist, `make test`) share the cores."""
import os
import re
import sys

import pytest
import torch

from helpers import run_tool


def test_workers_and_their_tools_share_the_cores():
    """Each worker's torch, and a tool it starts, runs at most its share of
    the cores' threads: more threads than cores spin against each other."""
    from conftest import available_cores
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    cores = available_cores()
    assert torch.get_num_threads() * workers <= max(cores, workers)
    out = run_tool(sys.executable, '-c',
                   'import torch; print(torch.get_num_threads())')
    assert int(out.split()[-1]) == torch.get_num_threads()


def test_cores_follow_a_cgroup_quota(tmp_path):
    """A quota of half a CPU (v2) or 1.5 CPUs (v1) caps the cores counted;
    none (``max``) leaves the affinity's count; tools/cores.sh agrees with
    the count on this machine."""
    from conftest import available_cores
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / 'v2').mkdir()
    (tmp_path / 'v2' / 'cpu.max').write_text('50000 100000\n')
    assert available_cores(str(tmp_path / 'v2')) == 1
    (tmp_path / 'v2' / 'cpu.max').write_text('max 100000\n')
    assert available_cores(str(tmp_path / 'v2')) == affinity
    (tmp_path / 'v1' / 'cpu').mkdir(parents=True)
    (tmp_path / 'v1' / 'cpu' / 'cpu.cfs_quota_us').write_text('150000\n')
    (tmp_path / 'v1' / 'cpu' / 'cpu.cfs_period_us').write_text('100000\n')
    assert available_cores(str(tmp_path / 'v1')) == min(affinity, 2)
    out = run_tool('sh', 'tools/cores.sh')
    assert int(out) == available_cores()


def test_a_preset_thread_count_above_the_share_is_lowered():
    """CI presetting OMP_NUM_THREADS above a worker's share: the workers'
    threads still fit the cores."""
    env = dict(os.environ, OMP_NUM_THREADS='64')
    env.pop('PYTEST_XDIST_WORKER_COUNT', None)
    out = run_tool(sys.executable, '-m', 'pytest', '-q', '-n', '2', '-p',
                   'no:cacheprovider', 'tests/test_parallel_workers.py::'
                   'test_workers_and_their_tools_share_the_cores', env=env)
    assert '1 passed' in out


def test_a_hung_tool_is_killed_before_the_test_with_where_it_hung(
        monkeypatch):
    """``run_tool`` kills a tool that outlives the test's own limit (less
    30 s) before pytest-timeout would, whatever timeout the call asked for:
    its whole process group (a child it started too) gets SIGABRT, then
    SIGKILL, and the test fails with the tool's output and the Python
    traceback of where each process was stuck."""
    import helpers
    monkeypatch.setattr(helpers, 'TEST_TIMEOUT', 34.0)
    child = ('import time\ndef child_stuck_here():\n    time.sleep(600)\n'
             'print("ready", flush=True)\nchild_stuck_here()\n')
    script = ('import subprocess, sys, time\n'
              f'child = subprocess.Popen([sys.executable, "-c", {child!r}], '
              'stdout=subprocess.PIPE, text=True)\n'
              'print("started child", child.pid, child.stdout.readline(), '
              'flush=True)\n'
              'def stuck_in_here():\n    time.sleep(600)\nstuck_in_here()\n')
    with pytest.raises(AssertionError) as failed:
        run_tool(sys.executable, '-c', script, timeout=900)
    message = str(failed.value)
    assert 'ran past 4 s' in message  # 34 - 30, not the 900 asked for
    pid = int(re.search(r'started child (\d+) ready', message).group(1))
    assert 'in stuck_in_here' in message  # the tool's traceback
    assert 'in child_stuck_here' in message  # its child's: the group's
    # killed: gone, a zombie no one has reaped yet, or its pid already
    # reused by another process (its command line is not the child's)
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().split(')')[-1].split()[0]
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            alive_child = b'child_stuck_here' in f.read()
    except FileNotFoundError:
        state, alive_child = 'gone', False
    assert state == 'Z' or not alive_child, state
