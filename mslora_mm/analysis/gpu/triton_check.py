"""``gpu_check``'s sections for the ``kernel='triton'`` adapter: its
numbers against PyTorch's layers at the backbones' adapter shapes, and each
kernel's time and bandwidth beside the card's.

On the CPU they run in Triton's interpreter when ``TRITON_INTERPRET=1`` was
set before the kernels were imported (``--device cpu --quick``: the dry run
of the device command), and are skipped otherwise.
"""
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

from ...core import MSLoRA
from ...core.ops import triton_unavailable
from ...core.runtime import runtime
from .common import Result, randomize, rel_error, skipped

#: (name, C, H = W, tokens with LN_in) of the adapters of ResNet-50's four
#: stages (block outputs) and Swin-T's, for a 512 x 512 image
SHAPES = [('r50_stage1', 256, 128, False), ('r50_stage2', 512, 64, False),
          ('r50_stage3', 1024, 32, False), ('r50_stage4', 2048, 16, False),
          ('swin_t_stage1', 96, 128, True), ('swin_t_stage2', 192, 64, True),
          ('swin_t_stage3', 384, 32, True), ('swin_t_stage4', 768, 16, True)]
#: largest relative error ``|a - ref| / |ref|`` (the fp64 stock path) of
#: an output or gradient: fp32 arithmetic (TF32 off), fp16's 11 and bf16's
#: 8 significant bits a few roundings deep
BOUNDS = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 6e-2}


def _skip(device: torch.device):
    """Why the Triton sections cannot run on ``device`` here, or None."""
    return triton_unavailable(torch.empty(0, device=device))


def _adapter(c: int, tokens: bool, rank: int) -> MSLoRA:
    """A seeded MSLoRA with every parameter random (``Up`` included)."""
    m = MSLoRA(c, rank=rank, groups=4, pre_norm=tokens)
    randomize(m, seed=c)
    return m


def _step(m: MSLoRA, x: Tensor, g: Tensor, kernel: str,
          hw: Tuple[int, int]) -> List[Tensor]:
    """``[output, input grad, parameter grads...]`` of ``(m(x) * g).sum()``
    under ``kernel``."""
    x = x.detach().clone().requires_grad_()
    m.zero_grad(set_to_none=True)
    with runtime(kernel=kernel):
        out = m(x, hw if x.dim() == 3 else None)
        (out.float() * g).sum().backward()
    return [out, x.grad] + [p.grad for p in m.parameters()]


def _inputs(c: int, size: int, tokens: bool, batch: int, device):
    g = torch.Generator().manual_seed(size)
    x = torch.randn(batch, c, size, size, generator=g)
    if tokens:
        x = x.flatten(2).transpose(1, 2).contiguous()
    grad = torch.randn(x.shape, generator=g)
    return x.to(device), grad.to(device)


def triton_vs_stock(device: torch.device, quick: bool) -> Result:
    """The Triton path's output, input gradient and parameter gradients at
    every adapter shape of ``SHAPES`` (batch 2, rank 128; quick: batch 1,
    8 x 8 maps, rank 8) in fp32, fp16 and bf16, against the stock path in
    fp64: each within ``BOUNDS``, and the stock path's own error at that
    dtype beside it."""
    why = _skip(device)
    if why:
        return skipped(why)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    rows, ok = {}, True
    try:
        for name, c, size, tokens in SHAPES[:2] + SHAPES[4:5] if quick \
                else SHAPES:
            size, batch, rank = (8, 1, 8) if quick else (size, 2, 128)
            m = _adapter(c, tokens, rank).to(device)
            x, g = _inputs(c, size, tokens, batch, device)
            ref = _step(m.double(), x.double(), g.double(), 'stock',
                        (size, size))
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                m.float()
                errors = {}
                for kernel in ('triton', 'stock'):
                    with torch.autocast(device.type, dtype=dtype,
                                        enabled=dtype != torch.float32):
                        got = _step(m, x, g, kernel, (size, size))
                    errors[kernel] = max(rel_error(a, b)
                                         for a, b in zip(got, ref))
                rows[f'{name}_{str(dtype)[6:]}'] = errors
                ok &= errors['triton'] < BOUNDS[dtype]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return dict(ok=ok, bounds={str(k)[6:]: v for k, v in BOUNDS.items()},
                max_rel_error=rows)


def copy_bandwidth(device: torch.device) -> float:
    """The card's device-to-device copy rate in GB/s (bytes read plus
    written), of 1 GiB: the ceiling a memory-bound kernel is measured
    against."""
    from triton.testing import do_bench
    a = torch.empty(2**28, device=device).normal_()
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=50, rep=200,
                  return_mode='median')
    return 2 * a.numel() * a.element_size() / ms / 1e6


def _kernel_cases(c: int, size: int, tokens: bool, dtype: torch.dtype,
                  device) -> Dict[str, Tuple[Callable, int]]:
    """``name: (launch, bytes it must move)`` of the three kernels at one
    adapter shape, batch 8, rank 128, on the ``(P, 2D)`` product of
    ``Pa``/``Pv`` as the operator reads it."""
    from ...core.ops.fused_adapter import EPS
    from ...core.ops.triton_transform import (transform_backward,
                                             transform_forward)
    m = _adapter(c, tokens, 128).to(device)
    b, d = 8, m.rank
    p = b * size * size
    zv = torch.randn(p, 2 * d, device=device, dtype=dtype)
    da = torch.randn(p, d, device=device, dtype=dtype)
    z, shape = zv[:, :d], (b, size, size)
    args = ([c.weight for c in m.dw], [c.bias for c in m.dw], m.norm.weight,
            m.norm.bias, EPS)
    e = dtype.itemsize * p * d  # one map in the activation dtype
    return {
        'forward': (lambda: transform_forward(z, shape, *args), 2 * e),
        'backward': (lambda: transform_backward(z, da, shape, *args),
                     3 * e + 2 * 3 * p * d * 4),  # z, da, dz; dU_k out, in
    }


def triton_kernels(device: torch.device, quick: bool) -> Result:
    """Each kernel's median time (``triton.testing.do_bench``) at every
    adapter shape in fp16, its achieved GB/s (the bytes it must move over
    its time) and that as a share of the card's copy bandwidth."""
    if device.type != 'cuda':
        return skipped('needs CUDA (triton.testing.do_bench)')
    why = _skip(device)
    if why:
        return skipped(why)
    from triton.testing import do_bench
    ceiling = copy_bandwidth(device)
    rows = {}
    for name, c, size, tokens in SHAPES:
        for kernel, (launch, nbytes) in _kernel_cases(
                c, size, tokens, torch.float16, device).items():
            ms = do_bench(launch, warmup=25, rep=100, return_mode='median')
            rows[f'{name}_{kernel}'] = dict(
                ms=ms, gb_s=nbytes / ms / 1e6,
                of_copy_bandwidth=nbytes / ms / 1e6 / ceiling)
    return dict(ok=True, copy_bandwidth_gb_s=ceiling, kernels=rows)
