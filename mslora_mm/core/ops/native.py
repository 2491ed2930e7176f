"""MSLoRA's multi-scale branches ``sum_k GELU(DW_k(z))`` as one native CPU
kernel (``csrc/multiscale_dw.cpp``), built on first use.

PyTorch runs the branches as K depthwise convolutions, K GELUs and a sum,
and its CPU kernels for the 5x5 and 7x7 depthwise weight gradients are slow.
The kernel computes the sum in one pass over ``z``; its backward recomputes
the pre-activations (it saves only ``z``), then computes the input gradient
of all branches in one pass and their weight and bias gradients in another.
Same mathematics, float32 and float64, channels-last. It is compiled once
per machine with ``torch.utils.cpp_extension`` (a C++ compiler with OpenMP,
and ``ninja``) and cached under ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``).
"""
import os
import os.path as osp
import platform
import shutil
import warnings
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..log import log
from ..runtime import DEFAULT, ENV_VAR, is_chosen, runtime_option

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc',
                  'multiscale_dw.cpp')
#: dtypes the kernel computes in; others (bf16 under autocast) use PyTorch
DTYPES = (torch.float32, torch.float64)
_BUILT: Dict[str, object] = {}  # 'module' or 'error', once per process


def _build_options() -> Tuple[str, List[str]]:
    """Name and compiler flags of the build for this CPU: AVX2 + FMA where
    PyTorch itself runs AVX2 or AVX-512 kernels, portable code elsewhere
    (one name per variant: a cache shared by different machines keeps
    both)."""
    capability = torch.backends.cpu.get_cpu_capability()
    x86 = platform.machine().lower() in ('x86_64', 'amd64')
    if x86 and capability in ('AVX2', 'AVX512'):
        arch = ['-mavx2', '-mfma', '-DCPU_CAPABILITY=AVX2',
                '-DCPU_CAPABILITY_AVX2']
        tag = 'avx2'
    else:
        arch, tag = ['-DCPU_CAPABILITY=DEFAULT'], 'default'
    return f'mslora_multiscale_dw_{tag}', ['-O3', '-fopenmp'] + arch


def _find_ninja() -> None:
    """Put the ``ninja`` of the ``ninja`` package (a requirement) on PATH if
    none is there (an environment used without activating it)."""
    if shutil.which('ninja') is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ['PATH'] = ninja.BIN_DIR + os.pathsep + \
            os.environ.get('PATH', '')


def load_kernel() -> ModuleType:
    """The compiled kernel (built on the first call in a process, then read
    from the cache). Raises ``RuntimeError`` naming the fix if it cannot be
    built."""
    if 'module' not in _BUILT and 'error' not in _BUILT:
        from torch.utils.cpp_extension import load
        name, cflags = _build_options()
        log(f'MSLoRA: loading the fused multi-scale CPU kernel {name} '
            '(built once per machine, about a minute; cached under '
            '$TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions)')
        try:
            _find_ninja()
            _BUILT['module'] = load(name, [SOURCE], extra_cflags=cflags,
                                    extra_ldflags=['-fopenmp'])
        except Exception as e:  # compiler, ninja or OpenMP missing
            _BUILT['error'] = f'{type(e).__name__}: {e}'
    if 'error' in _BUILT:
        raise RuntimeError(
            "MSLoRA kernel='native': the native CPU kernel "
            f'({SOURCE}) could not be built: {_BUILT["error"]}. Install a '
            'C++ compiler with OpenMP and ninja (pip install ninja), or '
            f'leave the runtime kernel to the device ({ENV_VAR}, '
            "set_runtime: PyTorch's layers where the kernel is unavailable) "
            "or set it 'stock'.")
    return _BUILT['module']


@torch.compiler.assume_constant_result
def build_error() -> str:
    """'' if the kernel is built here (builds it on the first call), else
    why not; a constant to ``torch.compile``, which does not trace the
    build."""
    try:
        load_kernel()
        return ''
    except RuntimeError as e:
        return str(e)


def kernel_available() -> bool:
    """Whether the kernel can be used here (builds it on the first call; a
    failed build is reported once, as a warning)."""
    failed_before = 'error' in _BUILT
    error = build_error()
    if error and not failed_before:
        warnings.warn(f"{error} Using PyTorch's layers instead.")
    return not error


@torch.library.custom_op('mslora::multiscale_branches', mutates_args=())
def multiscale_branches(z: Tensor, weights: List[Tensor],
                        biases: List[Tensor], top: int, rows: int) -> Tensor:
    """``sum_k GELU(conv_k(z))[:, :, top:top + rows]`` in the kernel, as a
    PyTorch operator (``torch.ops.mslora.multiscale_branches``: opaque to
    ``torch.compile`` and ``torch.export``, with a fake implementation and
    an autograd formula).

    Args:
        z (Tensor): ``(N, D, H, W)``.
        weights (list[Tensor]): K depthwise weights ``(D, 1, k, k)``.
        biases (list[Tensor]): K biases ``(D, )``.
        top (int): first output row of ``z``.
        rows (int): number of output rows.

    Returns:
        Tensor: ``(N, D, rows, W)``, channels-last.
    """
    return load_kernel().forward(z, weights, biases, top, rows)


@multiscale_branches.register_fake
def _(z: Tensor, weights: List[Tensor], biases: List[Tensor], top: int,
      rows: int) -> Tensor:
    n, d, _, w = z.shape
    return z.new_empty((n, d, rows, w)).contiguous(
        memory_format=torch.channels_last)


@torch.library.custom_op('mslora::multiscale_branches_backward',
                         mutates_args=())
def multiscale_branches_backward(z: Tensor, grad: Tensor,
                                 weights: List[Tensor], biases: List[Tensor],
                                 top: int, rows: int) -> List[Tensor]:
    """The gradients of :func:`multiscale_branches` to ``z`` (channels-last),
    then every weight and every bias (contiguous)."""
    dz, *dparams = load_kernel().backward(z, grad, weights, biases, top,
                                          rows)
    # the kernel's weight and bias gradients are views of one buffer: an
    # operator's outputs must not alias (they are C * k^2 numbers each)
    return [dz] + [g.clone(memory_format=torch.contiguous_format)
                   for g in dparams]


@multiscale_branches_backward.register_fake
def _(z: Tensor, grad: Tensor, weights: List[Tensor], biases: List[Tensor],
      top: int, rows: int) -> List[Tensor]:
    dz = torch.empty_like(z, memory_format=torch.channels_last)
    return [dz] + [torch.empty_like(t, memory_format=torch.contiguous_format)
                   for t in (*weights, *biases)]


def _save_inputs(ctx, inputs: tuple, output: Tensor) -> None:
    z, weights, biases, top, rows = inputs
    ctx.save_for_backward(z, *weights, *biases)
    ctx.branches, ctx.rows = len(weights), (top, rows)


def _backward(ctx, grad: Tensor):
    z, *params = ctx.saved_tensors
    k = ctx.branches
    dz, *dparams = multiscale_branches_backward(
        z, grad, params[:k], params[k:], *ctx.rows)
    return dz, dparams[:k], dparams[k:], None, None


multiscale_branches.register_autograd(_backward, setup_context=_save_inputs)


def fused_branch_sum(z: Tensor, convs: Sequence[nn.Conv2d],
                     rows: Optional[Tuple[int, int]] = None) -> Tensor:
    """``sum(F.gelu(conv(z)) for conv in convs)[:, :, r0:r1]`` in the native
    kernel: only rows ``rows=(r0, r1)`` (default all) are computed, the
    others of ``z`` are read by the convolutions.

    Args:
        z (Tensor): ``(B, D, H, W)`` float32/float64 map on the CPU.
        convs (Sequence[nn.Conv2d]): depthwise ``D -> D`` convolutions with
            odd ``k x k`` kernels, padding ``k // 2`` and a bias.
        rows (tuple[int, int], optional): the output's rows of ``z``.

    Returns:
        Tensor: ``(B, D, r1 - r0, W)``, channels-last.
    """
    r0, r1 = rows or (0, z.shape[2])
    return multiscale_branches(z, [c.weight for c in convs],
                               [c.bias for c in convs], r0, r1 - r0)


def use_kernel(z: Tensor, where: str) -> bool:
    """Whether the runtime's ``kernel='native'`` (``runtime.py``) runs the
    kernel on ``z``: float32/float64 CPU maps, kernel built. Left to the
    device's default it falls back to PyTorch's layers; chosen explicitly,
    another device or a failed build is an error that names ``where``."""
    if runtime_option('kernel', z.device) != 'native':
        return False
    if not is_chosen('kernel'):
        return z.device.type == 'cpu' and z.dtype in DTYPES and \
            kernel_available()
    if z.device.type != 'cpu':
        raise ValueError(
            f"MSLoRA({where}): runtime kernel='native' is a CPU kernel "
            f'and the input is on {z.device}; leave it to the device '
            f"(set_runtime(kernel={DEFAULT!r})), choose kernel='triton' or "
            f"'stock', or drop it from {ENV_VAR}")
    if z.dtype not in DTYPES:
        return False
    error = build_error()
    if error:
        raise RuntimeError(f'MSLoRA({where}): {error}')
    return True
