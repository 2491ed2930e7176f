"""Checks and a cost table for one CUDA device, with PyTorch, torchvision
and ``mslora_mm.core`` alone (``tools/analysis/gpu_check.py``).

Every section returns ``{'ok': bool | None, ...}`` (None: skipped, with a
``skipped`` reason). ``quick`` runs each at toy sizes (the CPU test of the
tool itself). The sections, by kind: ``numerics`` (the device against the
CPU, half precision, frozen layers, attention backends), ``train_step``
(DDP, ``torch.compile``), ``triton_check`` (the Triton operator) and
``costs`` (the cost tables and inference).
"""
import os
import time
from functools import partial
from typing import Callable, Dict, List, Optional

import torch

from .costs import cost_table, cost_table_compiled, cost_table_swin, inference
from .numerics import (amp_train_steps, frozen_layers_vs_stock,
                       mslora_cuda_vs_cpu, window_attention_backends)
from .train_step import ddp_step, graph_breaks
from .triton_check import triton_kernels, triton_vs_stock


#: every section by name, in the order ``run_all`` runs them
SECTIONS = {
    'mslora_cuda_vs_cpu': mslora_cuda_vs_cpu,
    'amp_train_steps': amp_train_steps,
    'frozen_layers_vs_stock': frozen_layers_vs_stock,
    'window_attention_backends': window_attention_backends,
    'ddp_step': ddp_step,
    'graph_breaks': graph_breaks,
    'triton_vs_stock': triton_vs_stock,
    'triton_kernels': triton_kernels,
    'cost_table': cost_table,
    'cost_table_compiled': cost_table_compiled,
    'cost_table_swin': cost_table_swin,
    'inference': inference,
}
#: the sections that print a cost table
COST_SECTIONS = ('cost_table', 'cost_table_compiled', 'cost_table_swin')


def _driver() -> Optional[str]:
    """The NVIDIA driver's version (``nvidia-smi``), or None."""
    import subprocess
    try:
        return subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version',
             '--format=csv,noheader'], capture_output=True, text=True,
            timeout=30).stdout.split('\n')[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> Dict[str, object]:
    """The card, driver, library versions and host the results are of."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(device=torch.cuda.get_device_name(device)
                if device.type == 'cuda' else 'cpu',
                driver=_driver() if device.type == 'cuda' else None,
                torch=torch.__version__, triton=triton_version,
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                cpu_threads=torch.get_num_threads(),
                hostname=os.uname().nodename)


def run_all(device: torch.device, quick: bool,
            sections: Optional[List[str]] = None,
            report: Optional[Callable[[str], None]] = None
            ) -> Dict[str, object]:
    """Every section (or ``sections``) in order; a section that raises is
    a failure with its error, and the others still run. Each section's line
    goes to ``report`` (default: printed and flushed, so that a run killed
    in a section shows the ones before it)."""
    report = report or partial(print, flush=True)
    results: Dict[str, object] = dict(environment=environment(device))
    for name in sections or SECTIONS:
        start = time.perf_counter()
        try:
            result = SECTIONS[name](device, quick)
        except Exception as e:  # reported, not hidden: the section fails
            result = dict(ok=False, error=f'{type(e).__name__}: {e}')
        result['seconds'] = time.perf_counter() - start
        results[name] = result
        state = {True: 'PASS', False: 'FAIL', None: 'SKIP'}[result['ok']]
        why = result.get('skipped') or result.get('error') or '; '.join(
            result.get('problems') or [])
        report(f'{state} {name} ({result["seconds"]:.1f} s)' + (
            f': {why}' if why else ''))
    return results
