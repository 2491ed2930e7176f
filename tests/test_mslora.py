"""MSLoRA module: the spec's mathematics, shapes, init, validation."""
import contextlib

import pytest
import torch
import torch.nn.functional as F

from mslora_mm import MSLoRA
from mslora_mm.core.mslora import BRANCHES


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def reference(m: MSLoRA, x: torch.Tensor) -> torch.Tensor:
    """A direct, unoptimised reading of MSLORA_SPEC.md section 1."""
    f = x
    if m.pre_norm:
        f = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1], ),
                         m.norm_in.weight, m.norm_in.bias,
                         1e-6).permute(0, 3, 1, 2)

    def conv(layer, z):
        return F.conv2d(z, layer.weight, layer.bias, padding=layer.padding,
                        groups=layer.groups)

    def T(z):
        s = 0
        for dw in m.dw:
            s = s + F.gelu(conv(dw, z))
        if m.context is not None:
            s = s + conv(m.context, z.mean(dim=(2, 3), keepdim=True))
        ln = F.layer_norm(s.permute(0, 2, 3, 1), (s.shape[1], ), m.norm.weight,
                          m.norm.bias, 1e-6).permute(0, 3, 1, 2)
        t = conv(m.pw, F.gelu(ln))
        if m.gate is not None:
            t = t * torch.sigmoid(conv(m.gate, z))
        return t

    if m.branches == 'linear':
        h = conv(m.pv, f)
    elif m.branches == 'nonlinear':
        h = T(conv(m.pa, f))
    else:
        h = conv(m.pv, f) * T(conv(m.pa, f))
    if m.use_shuffle:
        b, d, hh, ww = h.shape
        g = m.groups
        h = h.reshape(b, g, d // g, hh, ww).permute(0, 2, 1, 3, 4).reshape(
            b, d, hh, ww)
    return x + conv(m.up, h)


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(groups=1, kernel_sizes=(3, )),
    dict(branches='linear'),
    dict(branches='nonlinear', kernel_sizes=(3, 5)),
    dict(channel_shuffle=True, global_context=True, gate=True),
    dict(pre_norm=True, rank=16, groups=2),
])
def test_matches_reference(kwargs):
    m = MSLoRA(32, **{'rank': 16, **kwargs})
    randomize(m)
    x = torch.randn(2, 32, 9, 7)
    torch.testing.assert_close(m(x), reference(m, x), rtol=1e-5, atol=1e-5)


def test_identity_at_init_and_zero_up():
    m = MSLoRA(64)
    assert torch.count_nonzero(m.up.weight) == 0
    assert torch.count_nonzero(m.up.bias) == 0
    x = torch.randn(2, 64, 8, 8)
    assert torch.equal(m(x), x)
    m.init_weights()  # mmengine's init path keeps the identity start
    assert torch.equal(m(x), x)


def test_tokens_equal_maps():
    m = MSLoRA(32, rank=16, pre_norm=True)
    randomize(m, 1)
    x = torch.randn(2, 32, 5, 6)
    tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
    out = m(tokens, hw_shape=(5, 6))
    assert out.shape == (2, 30, 32)
    torch.testing.assert_close(
        out, m(x).flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='hw_shape'):
        m(tokens)


def test_gradients_reach_every_parameter():
    m = MSLoRA(32, rank=16, channel_shuffle=True, global_context=True,
               gate=True, pre_norm=True)
    x = torch.randn(2, 32, 8, 8)
    m(x).square().sum().backward()
    # Up is zero: only Up has a gradient at step 0
    assert m.up.weight.grad.abs().sum() > 0
    assert m.pv.weight.grad is None or m.pv.weight.grad.abs().sum() == 0
    with torch.no_grad():
        m.up.weight.normal_()
    m.zero_grad()
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_count_formula():
    c, d, g = 256, 128, 4
    m = MSLoRA(c, rank=d, groups=g)
    projection = 3 * c * d // g + 2 * d + c
    transformation = d * (9 + 25 + 49) + 3 * d + 2 * d + d * d + d
    assert sum(p.numel() for p in m.projection_parameters()) == projection
    assert sum(p.numel() for p in m.parameters()) == projection + \
        transformation


@pytest.mark.parametrize('kwargs, match', [
    (dict(groups=3), 'groups=3 must divide in_channels=64'),
    (dict(rank=30, groups=4), 'groups=4 must divide rank=30'),
    (dict(kernel_sizes=(3, 4)), 'kernel_sizes=\\(3, 4\\) must be odd'),
    (dict(kernel_sizes=()), 'kernel_sizes'),
    (dict(rank=0), 'rank=0 must be an int >= 1'),
    (dict(branches='both_ways'), "branches='both_ways' is unknown"),
    (dict(channels_last='yes'), "channels_last='yes' must be True, False "
     "or 'auto'"),
    (dict(with_cp=None), "with_cp=None must be True, False or 'auto'"),
    (dict(band_rows=0), "band_rows=0 must be None, 'auto' or an int >= 1"),
    (dict(band_rows=8, global_context=True),
     'band_rows needs global_context=False'),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSLoRA(64, site='layer1.0', **kwargs)
    with pytest.raises(ValueError, match='at layer1.0'):
        MSLoRA(64, site='layer1.0', **kwargs)


def assert_same_outputs_and_gradients(ref: MSLoRA, other: MSLoRA,
                                      x: torch.Tensor, hw: dict,
                                      record=contextlib.nullcontext()
                                      ) -> None:
    """``other`` computes what ``ref`` does: outputs, input and parameter
    gradients (``other``'s forward runs inside ``record``)."""
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    with record:
        out_o = other(xo, **hw)
    out_r = ref(xr, **hw)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out_r)
    out_r.backward(g)
    out_o.backward(g)
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
    for (name, pr), po in zip(ref.named_parameters(), other.parameters()):
        torch.testing.assert_close(po.grad, pr.grad, rtol=1e-4, atol=1e-5,
                                   msg=name)


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('speed', [
    dict(channels_last=True),
    dict(with_cp=True),
    dict(channels_last=True, with_cp=True),
    dict(channels_last='auto', with_cp='auto'),
])
def test_speed_options_keep_outputs_and_gradients(speed, tokens):
    """Maps (ResNet) and pre-norm tokens (Swin): same outputs, gradients."""
    extra = dict(gate=True, global_context=True, pre_norm=tokens)
    ref = MSLoRA(32, rank=16, **extra)
    randomize(ref, 2)
    fast = MSLoRA(32, rank=16, **extra, **speed)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 120, 32) if tokens else torch.randn(2, 32, 12, 10)
    hw = dict(hw_shape=(12, 10)) if tokens else {}
    assert_same_outputs_and_gradients(ref, fast, x, hw)


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('branches', BRANCHES)
@pytest.mark.parametrize('band_rows', [1, 4, 5, 13])
def test_bands_keep_outputs_and_gradients(band_rows, branches, tokens):
    """Bands with halos (13 rows: one band) give the one-band outputs and
    gradients, and autograd keeps nothing larger than a band and its halo."""
    extra = dict(gate=branches != 'linear', channel_shuffle=True,
                 pre_norm=tokens, branches=branches)
    ref = MSLoRA(32, rank=16, **extra)
    randomize(ref, 3)
    banded = MSLoRA(32, rank=16, band_rows=band_rows, **extra)
    banded.load_state_dict(ref.state_dict())
    x = torch.randn(2, 13 * 10, 32) if tokens else torch.randn(2, 32, 13, 10)
    hw = dict(hw_shape=(13, 10)) if tokens else {}
    largest = []
    assert_same_outputs_and_gradients(
        ref, banded, x, hw, torch.autograd.graph.saved_tensors_hooks(
            lambda t: largest.append(t.numel() if t.dim() == 4 and
                                     t.shape[1] == 16 else 0) or t,
            lambda t: t))
    halo = 3 if branches != 'linear' else 0
    assert max(largest) == 2 * 16 * 10 * min(band_rows + 2 * halo, 13)


def test_auto_speed_options_follow_the_device():
    """'auto' takes the measured choice for the input's device
    (docs/benchmarks.md): on CPU both on; on CUDA the stock layout, still
    recomputing."""
    from mslora_mm.core.mslora import AUTO_CHOICES
    adapter = MSLoRA(32, rank=16, channels_last='auto', with_cp='auto')
    assert adapter.resolved('channels_last', torch.device('cpu')) is True
    assert adapter.resolved('with_cp', torch.device('cpu')) is True
    assert adapter.resolved('channels_last', torch.device('cuda')) is False
    assert adapter.resolved('with_cp', torch.device('cuda')) is True
    assert adapter.resolved('band_rows', torch.device('cpu')) is None
    banded = MSLoRA(32, rank=16, band_rows='auto')
    assert banded.resolved('band_rows', torch.device('cpu')) == 32
    assert banded.resolved('band_rows', torch.device('cuda')) is None
    pooled = MSLoRA(32, rank=16, band_rows='auto', global_context=True)
    assert pooled.resolved('band_rows', torch.device('cpu')) is None
    assert set(AUTO_CHOICES) == {'cpu', 'cuda'}
    fixed = MSLoRA(32, rank=16, channels_last=False, with_cp=True)
    assert fixed.resolved('channels_last', torch.device('cpu')) is False
    # on CPU 'auto' recomputes: autograd keeps the adapter's input only
    x = torch.randn(2, 32, 12, 10, requires_grad=True)
    kept = {}
    for name, a in (('auto', adapter), ('off', MSLoRA(32, rank=16))):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: sizes.append(t.numel()) or t, lambda t: t):
            a(x)
        kept[name] = sum(sizes)
    assert kept['auto'] < 0.5 * kept['off']


def test_auto_choices_are_the_documented_ones():
    """docs/method.md's table of the speed options states AUTO_CHOICES."""
    from helpers import ROOT
    from mslora_mm.core.mslora import AUTO_CHOICES
    words = {'on': True, 'off': False, 'one band': None}
    rows = {}
    for line in open(f'{ROOT}/docs/method.md'):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 3 and cells[0].strip('`') in AUTO_CHOICES['cpu']:
            rows[cells[0].strip('`')] = [
                words[v] if v in words else int(v)
                for v in cells[2].split(' / ')]
    assert rows == {option: [AUTO_CHOICES['cpu'][option],
                             AUTO_CHOICES['cuda'][option]]
                    for option in AUTO_CHOICES['cpu']}


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('band_rows', [None, 4])
def test_recompute_keeps_nothing_but_the_input(tokens, band_rows):
    """with_cp: ``LN_in`` is recomputed too, so after the forward no tensor
    of the input's size is alive besides the input, the output and views of
    them (a pre-norm adapter used to keep ``LN_in(F)``)."""
    import gc
    import warnings
    adapter = MSLoRA(32, rank=16, pre_norm=True, with_cp=True,
                     band_rows=band_rows)
    randomize(adapter, 4)
    x = (torch.randn(2, 13 * 10, 32) if tokens else
         torch.randn(2, 32, 13, 10)).requires_grad_()
    out = adapter(x, **(dict(hw_shape=(13, 10)) if tokens else {}))
    gc.collect()
    own = {x.untyped_storage().data_ptr(), out.untyped_storage().data_ptr()}
    with warnings.catch_warnings():  # isinstance on deprecated objects
        warnings.simplefilter('ignore')
        alive = [tuple(t.shape) for t in gc.get_objects()
                 if isinstance(t, torch.Tensor) and t.numel() == x.numel()
                 and t.untyped_storage().data_ptr() not in own]
    assert alive == []
    out.sum().backward()  # the recompute still has what it needs
    assert x.grad is not None and adapter.norm_in.weight.grad is not None
