"""The adapter's operators, one per implementation, and which one runs.

- ``native.py`` + ``csrc/``: ``torch.ops.mslora.multiscale_branches``, the
  multi-scale branch sum ``sum_k GELU(DW_k(z))`` of CPU maps in C++ (built
  on first use), inside PyTorch's layers for the rest of the adapter;
- ``fused_adapter.py`` + ``triton_transform.py``:
  ``torch.ops.mslora.fused_adapter``, the whole adapter (default form) as
  one operator with an autograd formula: matrix products on channels-last
  pixels and Triton kernels for the multi-scale transformation (CUDA; the
  CPU under ``TRITON_INTERPRET=1``).

The runtime option ``kernel`` (``runtime.py``) chooses: :func:`use_fused`
and ``native.use_kernel`` say, per adapter call, whether each runs.
"""
import importlib.util
import os
from typing import Optional

from torch import Tensor

from ..log import log
from ..runtime import DEFAULT, ENV_VAR, is_chosen, runtime_option
from .fused_adapter import fused_forward, unfused_reason
from .native import fused_branch_sum, kernel_available, use_kernel

#: the adapters whose options keep them on PyTorch's layers, logged once
_REPORTED: set = set()


def triton_unavailable(x: Tensor) -> Optional[str]:
    """Why the Triton kernels cannot run on ``x``'s device here, or None:
    CUDA with triton installed, or the CPU under ``TRITON_INTERPRET=1``."""
    if importlib.util.find_spec('triton') is None:
        return ('triton is not installed (it comes with the Linux CUDA '
                'builds of PyTorch: pip install triton)')
    if x.device.type == 'cpu' and os.environ.get('TRITON_INTERPRET') != '1':
        return ('on the CPU the Triton kernels run only in Triton\'s '
                'interpreter: set TRITON_INTERPRET=1 before starting Python')
    if x.device.type not in ('cpu', 'cuda'):
        return f'the Triton kernels run on CUDA, not on {x.device}'
    return None


def use_fused(adapter, x: Tensor) -> bool:
    """Whether ``adapter`` (an ``MSLoRA``) computes ``x`` through
    ``fused_adapter``: the runtime's ``kernel='triton'`` on a device the
    kernels run on, and the adapter in the default form. Options outside it
    keep PyTorch's layers (the reason logged once per adapter); a device
    the kernels cannot run on is an error naming the adapter if the kernel
    was chosen explicitly, PyTorch's layers if it is the device's
    default."""
    if runtime_option('kernel', x.device) != 'triton':
        return False
    reason = unfused_reason(adapter)
    if reason is not None:
        if adapter.where not in _REPORTED:
            _REPORTED.add(adapter.where)
            log(f"MSLoRA({adapter.where}): {reason} is computed by PyTorch's "
                "layers, not the kernel='triton' operator (which fuses the "
                "default form: branches='both', three kernel sizes, no "
                'global_context, gate or channel_shuffle)')
        return False
    error = triton_unavailable(x)
    if error is None:
        return True
    if not is_chosen('kernel'):
        return False
    raise RuntimeError(
        f"MSLoRA({adapter.where}): runtime kernel='triton': {error}; or "
        f"choose kernel='stock' or leave it to the device "
        f"(set_runtime(kernel={DEFAULT!r}), {ENV_VAR})")


__all__ = ['fused_forward', 'use_fused', 'unfused_reason', 'triton_unavailable',
           'fused_branch_sum', 'kernel_available', 'use_kernel']
