"""The suite's parallel workers (pytest-xdist, `make test`) share the cores."""
import os
import sys

import torch

from helpers import run_tool


def test_workers_and_their_tools_share_the_cores():
    """Each worker's torch, and a tool it starts, runs at most its share of
    the cores' threads: more threads than cores spin against each other."""
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    cores = len(os.sched_getaffinity(0))
    assert torch.get_num_threads() * workers <= max(cores, workers)
    out = run_tool(sys.executable, '-c',
                   'import torch; print(torch.get_num_threads())')
    assert int(out.split()[-1]) == torch.get_num_threads()
