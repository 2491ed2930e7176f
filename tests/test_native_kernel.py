"""The fused multi-scale branches (``mslora_mm/core/ops/native.py``):
the native CPU kernel computes what PyTorch's layers compute, and MSLoRA
uses it only where it can."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import assert_same_outputs_and_gradients, randomize
from mslora_mm.core.ops import native
from mslora_mm.core.ops.native import fused_branch_sum, use_kernel
from mslora_mm.core.mslora import MSLoRA
from mslora_mm.core.runtime import DEFAULT, runtime

#: the autograd node of the kernel's custom operator
KERNEL_NODE = 'GeneratedBackwardFor_mslora_multiscale_branches_defaultBackward'


def depthwise(d: int, kernel_sizes, dtype=torch.float32) -> nn.ModuleList:
    g = torch.Generator().manual_seed(d)
    convs = nn.ModuleList(nn.Conv2d(d, d, k, padding=k // 2, groups=d)
                          for k in kernel_sizes).to(dtype)
    with torch.no_grad():
        for p in convs.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.3)
    return convs


def stock_branch_sum(z, convs, rows):
    return sum(F.gelu(conv(z)) for conv in convs)[:, :, rows[0]:rows[1]]


def graph_nodes(out: torch.Tensor) -> set:
    """Class names of the autograd nodes behind ``out``."""
    names, seen, stack = set(), set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            names.add(type(node).__name__)
            stack.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize('shape, kernel_sizes, rows', [
    ((2, 128, 20, 17), (3, 5, 7), None),  # one block of 128 channels
    ((1, 77, 9, 11), (3, 5, 7), (3, 6)),  # 32 + 32 + 8 + 5 channels; a band
    # runs of 64 / C pixels inside the row, single pixels at its borders
    ((2, 16, 5, 41), (3, 5, 7), None),  # 4-pixel runs
    ((1, 24, 6, 30), (3, 5, 7), (1, 4)),  # 2-pixel runs, a band
    ((1, 8, 4, 23), (3, ), None),  # 8-pixel runs
    ((1, 48, 3, 19), (1, 5), None),  # 32 + 16 channels
    ((2, 5, 2, 3), (1, 9), None),  # a map smaller than the kernel
    ((1, 16, 6, 6), (3, ), (5, 6)),  # the last row alone
])
def test_kernel_gives_the_outputs_and_gradients_of_pytorch(
        shape, kernel_sizes, rows):
    convs = depthwise(shape[1], kernel_sizes)
    rows = rows or (0, shape[2])
    z = torch.randn(shape)
    zf, zs = z.clone().requires_grad_(), z.clone().requires_grad_()
    out = fused_branch_sum(zf, convs, rows)
    params = [p for c in convs for p in (c.weight, c.bias)]
    fused_grads = torch.autograd.grad(out, [zf, *params],
                                      grad_out := torch.randn(out.shape))
    ref = stock_branch_sum(zs, convs, rows)
    ref_grads = torch.autograd.grad(ref, [zs, *params], grad_out)
    assert out.shape == ref.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for name, f, r in zip(['z'] + [n for n, _ in convs.named_parameters()],
                          fused_grads, ref_grads):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4, msg=name)
    # rows outside the band's reach get no gradient
    reach = max(kernel_sizes) // 2
    assert not fused_grads[0][:, :, :max(rows[0] - reach, 0)].any()
    assert not fused_grads[0][:, :, rows[1] + reach:].any()


def test_kernel_saves_only_its_input():
    """Autograd keeps ``z`` (and the weights) for the kernel's backward;
    PyTorch's layers keep ``z`` and every branch's pre-activation."""
    convs = depthwise(16, (3, 5, 7))
    z = torch.randn(2, 16, 10, 10, requires_grad=True)
    kept = {}
    for name, fn in (('fused', fused_branch_sum),
                     ('stock', lambda z, c: stock_branch_sum(z, c, (0, 10)))):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.append(t) or t, lambda t: t):
            fn(z, convs)
        kept[name] = {t.data_ptr() for t in saved if t.shape == z.shape}
    assert kept['fused'] == {z.data_ptr()}
    assert len(kept['stock']) == 4


def test_kernel_passes_gradcheck_in_float64():
    convs = depthwise(10, (3, 5), torch.float64)
    z = torch.randn(2, 10, 6, 7, dtype=torch.float64, requires_grad=True)
    params = [p for c in convs for p in (c.weight, c.bias)]

    def fused(z, *params):
        return native.multiscale_branches(
            z, list(params[0::2]), list(params[1::2]), 1, 4)

    assert torch.autograd.gradcheck(fused, (z, *params))
    convs = depthwise(16, (3, 5), torch.float64)  # runs of 4 pixels
    z = torch.randn(1, 16, 6, 15, dtype=torch.float64, requires_grad=True)
    params = [p for c in convs for p in (c.weight, c.bias)]
    assert torch.autograd.gradcheck(fused, (z, *params))


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('with_cp, settings', [
    (False, dict(kernel='native')),
    (False, dict(kernel='native', channels_last=True)),
    (True, dict(kernel='native', band_rows=5)),
])
def test_mslora_fused_keeps_outputs_and_gradients(with_cp, settings, tokens):
    """Maps (ResNet) and pre-norm tokens (Swin), with the gate, bands and
    the recompute: the outputs and gradients of PyTorch's layers."""
    extra = dict(gate=True, channel_shuffle=True, pre_norm=tokens)
    ref = MSLoRA(32, rank=16, **extra)
    randomize(ref, 5)
    fused = MSLoRA(32, rank=16, with_cp=with_cp, **extra)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 13 * 10, 32) if tokens else torch.randn(2, 32, 13, 10)
    hw = dict(hw_shape=(13, 10)) if tokens else {}
    with runtime(**settings):
        assert KERNEL_NODE in graph_nodes(
            fused(x.clone().requires_grad_(), **hw))
    with runtime(kernel='stock'):
        assert KERNEL_NODE not in graph_nodes(
            ref(x.clone().requires_grad_(), **hw))
    assert_same_outputs_and_gradients(ref, fused, x, hw, settings)


@pytest.mark.parametrize('tokens', [False, True])
def test_mslora_inference_runs_the_kernel_and_bf16_does_not(monkeypatch,
                                                            tokens):
    """Inference (no gradients) computes the branches in the kernel too,
    PyTorch's outputs within float tolerance; bf16 autocast keeps PyTorch's
    layers, bit for bit."""
    import mslora_mm.core.mslora as mslora_module
    calls = []
    kernel = mslora_module.fused_branch_sum
    monkeypatch.setattr(mslora_module, 'fused_branch_sum',
                        lambda *a: calls.append(a[0].shape) or kernel(*a))
    m = MSLoRA(32, rank=16, pre_norm=tokens)
    randomize(m, 6)
    x, hw = torch.randn(2, 32, 9, 8), {}
    if tokens:
        x, hw = x.flatten(2).transpose(1, 2), dict(hw_shape=(9, 8))
    with torch.no_grad():
        with runtime(kernel='stock'):
            ref = m(x, **hw)
        assert calls == []
        with runtime(kernel='native'):
            torch.testing.assert_close(m(x, **hw), ref)
    assert calls == [(2, 16, 9, 8)]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        xg = x.clone().requires_grad_()
        with runtime(kernel='stock'):
            ref = m(xg, **hw)
        with runtime(kernel='native'):
            assert torch.equal(m(xg, **hw), ref)
    assert len(calls) == 1


def test_default_falls_back_and_chosen_fails_when_the_kernel_cannot_build(
        monkeypatch):
    """No compiler or ninja: the device's default warns once and uses
    PyTorch's layers; the kernel chosen explicitly is an error that names
    the site and the fix."""
    import torch.utils.cpp_extension as cpp

    def no_ninja(*args, **kwargs):
        raise RuntimeError('Ninja is required to load C++ extensions')

    monkeypatch.setattr(native, '_BUILT', {})
    monkeypatch.setattr(cpp, 'load', no_ninja)
    m = MSLoRA(32, rank=16, site='layer1.0')
    randomize(m, 7)
    with pytest.warns(UserWarning) as caught:
        assert_same_outputs_and_gradients(
            m, m, torch.randn(1, 32, 6, 6), {},
            dict(kernel=DEFAULT))
        with runtime(kernel=DEFAULT):
            m(torch.randn(1, 32, 6, 6, requires_grad=True))
    messages = [str(w.message) for w in caught
                if "kernel='native'" in str(w.message)]
    assert len(messages) == 1
    assert 'Ninja is required' in messages[0]
    assert "Using PyTorch's layers instead" in messages[0]
    with runtime(kernel='native'), pytest.raises(
            RuntimeError, match='at layer1.0.*Ninja is required'
            '.*pip install ninja'):
        m(torch.randn(1, 32, 6, 6, requires_grad=True))


def test_chosen_kernel_on_another_device_is_an_error():
    z = torch.empty(1, 8, 4, 4, device='meta')
    with runtime(kernel='native'), pytest.raises(
            ValueError, match="at layer2.1.*kernel='native' is a CPU "
            "kernel.*set_runtime\\(kernel='default'\\)"):
        use_kernel(z, 'in_channels=8 at layer2.1')
    with runtime(kernel=DEFAULT):
        assert use_kernel(z, 'layer2.1') is False
    with runtime(kernel='stock'):
        assert use_kernel(torch.empty(1, 8, 4, 4), 'x') is False


def test_ninja_of_the_requirement_is_found_without_an_activated_env(
        monkeypatch):
    """``.venv/bin/python tools/train.py`` (PATH without the venv): the
    build still finds the ``ninja`` package's binary."""
    import shutil
    monkeypatch.setenv('PATH', '/nonexistent')
    assert shutil.which('ninja') is None
    native._find_ninja()
    assert shutil.which('ninja') is not None
