"""The ``kernel='triton'`` adapter against PyTorch's layers, on the CPU in
Triton's interpreter. Run by ``test_triton_kernels.py`` in a pytest process
of its own with ``TRITON_INTERPRET=1`` (read when the kernels are
decorated); not collected by the suite itself (its name is not
``test_*.py``).

The interpreter is slow (numpy, one program at a time): the shapes are
small and chosen for the edges: maps whose H and W are not multiples of the
tile, maps smaller than the 7x7 halo, D not a power of two, batch 1 and 3.
"""
import os

import pytest
import torch

from helpers import in_ci
from mslora_mm.core import MSLoRA
from mslora_mm.core.runtime import runtime

if os.environ.get('TRITON_INTERPRET') != '1':
    raise RuntimeError('run with TRITON_INTERPRET=1 (test_triton_kernels.py '
                       'does)')
if not in_ci():
    pytest.importorskip('triton', reason='triton is not installed')
import triton  # noqa: E402  (under CI a missing triton fails here)

from mslora_mm.core.ops import fused_adapter, triton_transform  # noqa: E402


def adapter(c: int, d: int, dtype=torch.float32, seed: int = 0,
            **kwargs) -> MSLoRA:
    """An MSLoRA with every parameter random (``Up`` included)."""
    torch.manual_seed(seed)
    m = MSLoRA(c, rank=d, groups=4, **kwargs).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def run(m: MSLoRA, x: torch.Tensor, kernel: str, hw=None, seed: int = 1):
    """Output, input gradient and parameter gradients of ``m(x)`` under a
    fixed random output gradient."""
    x = x.detach().clone().requires_grad_()
    m.zero_grad()
    with runtime(kernel=kernel):  # the recompute too
        y = m(x, hw)
        g = torch.randn(y.shape, dtype=y.dtype,
                        generator=torch.Generator().manual_seed(seed))
        (y * g).sum().backward()
    return y.detach(), x.grad, {n: p.grad.clone()
                                for n, p in m.named_parameters()}


def assert_matches_stock(m: MSLoRA, x: torch.Tensor, hw=None,
                         rtol=1e-5) -> None:
    """The Triton path's output and gradients are the stock path's, each
    within ``rtol`` of its largest magnitude."""
    ref = run(m, x, 'stock', hw)
    out = run(m, x, 'triton', hw)
    assert out[0].shape == ref[0].shape
    for name, a, b in [('output', out[0], ref[0]), ('input grad', out[1],
                                                    ref[1])] + [
            (n, out[2][n], ref[2][n]) for n in ref[2]]:
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=0, atol=rtol * b.abs().max(),
                                   msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('b, h, w, d, with_cp', [
    (3, 5, 19, 12, False),   # W not a multiple of the 16-pixel tile, D=12
    (1, 2, 3, 8, True),      # a map smaller than the 7x7 halo
    (2, 9, 4, 36, True),     # D=36: two blocks of 32 channels, one padded
])
def test_maps_match_the_stock_path(b, h, w, d, with_cp):
    m = adapter(16, d, with_cp=with_cp)
    assert_matches_stock(m, torch.randn(b, 16, h, w))


def test_channels_last_input_and_output():
    m = adapter(16, 8)
    x = torch.randn(2, 16, 6, 7).contiguous(memory_format=torch.channels_last)
    assert_matches_stock(m, x)
    with runtime(kernel='triton'):
        y = m(x)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('with_cp', [False, True])
def test_pre_norm_tokens_match_the_stock_path(with_cp):
    """Swin's form: ``(B, N, C)`` tokens with ``LN_in``."""
    m = adapter(16, 12, pre_norm=True, with_cp=with_cp)
    assert_matches_stock(m, torch.randn(3, 4 * 5, 16), hw=(4, 5))


def test_float64_gradcheck_of_the_whole_operator():
    """``fused_adapter`` in float64 against finite differences: the input
    and every parameter (tokens with ``LN_in``; the parameters as one
    vector, so that fast mode projects the whole Jacobian at once)."""
    m = adapter(8, 4, torch.float64, pre_norm=True)
    x = torch.randn(1, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    params = list(fused_adapter.adapter_parameters(m))
    flat = torch.cat([p.detach().flatten() for p in params]).requires_grad_()

    def op(x, flat):
        parts = flat.split([p.numel() for p in params])
        return fused_adapter.fused_adapter(
            x, [v.view_as(p) for v, p in zip(parts, params)], 4, True,
            torch.float64, False)[0]

    assert torch.autograd.gradcheck(op, (x, flat), fast_mode=True)


@pytest.mark.parametrize('dtype, bound', [(torch.float16, 5e-3),
                                          (torch.bfloat16, 4e-2)])
def test_half_precision_against_float32(dtype, bound):
    """fp16/bf16 maps (fp32 weights and accumulation): output and
    gradients within ``bound`` of the largest float32 value (fp16's 11 and
    bf16's 8 significant bits, a few roundings deep); weight gradients in
    float32."""
    m = adapter(16, 8)
    x = torch.randn(2, 16, 5, 6)
    ref = run(m, x, 'triton')
    half = run(m.to(dtype), x.to(dtype), 'triton')
    m.float()
    for a, b in [(half[0], ref[0]), (half[1], ref[1])]:
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, rtol=0,
                                   atol=bound * b.abs().max())
    for name, g in ref[2].items():
        assert half[2][name].dtype == dtype  # the parameters were cast
        torch.testing.assert_close(half[2][name].float(), g, rtol=0,
                                   atol=4 * bound * g.abs().max(), msg=name)


def test_autocast_computes_in_half_and_adds_the_residual_in_float32():
    m = adapter(16, 8)
    x = torch.randn(1, 16, 4, 5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ref = run(m, x, 'stock')
        out = run(m, x, 'triton')
    assert out[0].dtype == ref[0].dtype == torch.float32
    for name, g in out[2].items():
        assert g.dtype == torch.float32, name
    torch.testing.assert_close(out[0], ref[0], rtol=0,
                               atol=4e-2 * ref[0].abs().max())


def test_every_output_element_is_written(monkeypatch):
    """Outputs and partial sums allocated NaN-filled: an element a kernel
    leaves unwritten reaches the results."""
    empty = torch.empty

    def nan_empty(*args, **kwargs):
        return empty(*args, **kwargs).fill_(float('nan'))

    m = adapter(16, 12)
    x = torch.randn(3, 16, 5, 19)
    ref = run(m, x, 'stock')
    monkeypatch.setattr(triton_transform.torch, 'empty', nan_empty)
    out = run(m, x, 'triton')
    monkeypatch.undo()
    for a, b in [(out[0], ref[0]), (out[1], ref[1])] + [
            (out[2][n], ref[2][n]) for n in ref[2]]:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * b.abs().max())


def test_with_cp_saves_only_the_input_and_the_parameters():
    """Saved-tensor hooks: with ``with_cp`` autograd keeps the adapter's
    input (laid out as pixels) and its parameters; without it, its maps
    too."""
    x = torch.randn(2, 16, 6, 5).contiguous(memory_format=torch.channels_last)
    saved = {}
    for with_cp in (True, False):
        m = adapter(16, 8, with_cp=with_cp)
        params = {p.data_ptr() for p in m.parameters()}
        others = []

        def pack(t):
            if t.data_ptr() not in params:
                others.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                runtime(kernel='triton'):
            m(x.clone().requires_grad_())
        saved[with_cp] = others
    pixels = torch.Size([2, 6, 5, 16])
    assert [t.shape for t in saved[True]] == [pixels]
    assert [t.shape for t in saved[False]] == [pixels, (60, 16), (60, 8),
                                               (60, 8)]  # zv, a, t


def test_train_step_compiles_in_one_graph_and_export_keeps_the_operator():
    """``torch.compile`` traces a train step's forward and loss without
    breaks (the operator is opaque, with a fake implementation); the
    compiled step's gradients are eager's. ``torch.export`` keeps
    ``mslora.fused_adapter`` as one node."""
    import torch._dynamo
    m = adapter(16, 8, with_cp=True)
    x = torch.randn(2, 16, 6, 5)

    def loss(x):
        return m(x).square().mean()

    torch._dynamo.reset()
    with runtime(kernel='triton'):
        explained = torch._dynamo.explain(loss)(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1
        m.zero_grad()
        loss(x).backward()
        eager = {n: p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad()
        torch.compile(loss, backend='aot_eager')(x).backward()
        for n, p in m.named_parameters():
            torch.testing.assert_close(p.grad, eager[n], msg=n)
        exported = torch.export.export(m.eval(), (x, ))
    targets = [str(n.target) for n in exported.graph.nodes]
    assert targets.count('mslora.fused_adapter.default') == 1, targets
    with runtime(kernel='triton'):
        torch.testing.assert_close(exported.module()(x), m(x))

