"""MSLoRA module: the spec's mathematics, shapes, init, validation."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import (ROOT, assert_same_outputs_and_gradients, randomize,
                     run_tool)
from mslora_mm import MSLoRA
from mslora_mm.core import runtime
from mslora_mm.core.mslora import BRANCHES


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
@pytest.mark.parametrize('settings', ['stock', 'cpu'])
def test_matches_reference(kwargs, settings):
    """PyTorch's layers (stock) and the CPU's runtime defaults (layout,
    bands of 4 rows, the kernel) compute the spec's reading."""
    m = MSLoRA(32, **{'rank': 16, **kwargs})
    randomize(m)
    x = torch.randn(2, 32, 9, 7)
    chosen = runtime.STOCK if settings == 'stock' else dict(
        runtime.DEVICE_DEFAULTS['cpu'], band_rows=4)
    with runtime.runtime(**chosen):
        out = m(x)
    torch.testing.assert_close(out, reference(m, x), rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize('channels, ratio, rank', [
    (16, 1.0, 16),  # D <= C
    (24, 1.0, 24),
    (320, 1.0, 32),  # the rank itself
    (40, 0.5, 20),
    (24, 0.5, 12),
    (20, 0.5, 8),  # 10, down to a multiple of the 4 groups
    (8, 0.25, 4),  # at least the groups
    (16, None, 32),  # no rule: the fixed D
])
def test_max_rank_ratio_caps_the_rank_by_the_channels(channels, ratio, rank):
    m = MSLoRA(channels, rank=32, groups=4, max_rank_ratio=ratio)
    assert m.rank == rank
    assert m.pa.out_channels == m.up.in_channels == len(m.norm.weight) == rank
    x = torch.randn(1, channels, 6, 5)
    assert m(x).shape == x.shape
    assert f'rank={rank}' in repr(m)


@pytest.mark.parametrize('kwargs, match', [
    (dict(groups=3), 'groups=3 must divide in_channels=64'),
    (dict(max_rank_ratio=0), 'max_rank_ratio=0 must be a number > 0'),
    (dict(max_rank_ratio='channels'),
     "max_rank_ratio='channels' must be a number > 0"),
    (dict(rank=30, groups=4), 'groups=4 must divide rank=30'),
    (dict(kernel_sizes=(3, 4)), 'kernel_sizes=\\(3, 4\\) must be odd'),
    (dict(kernel_sizes=()), 'kernel_sizes'),
    (dict(rank=0), 'rank=0 must be an int >= 1'),
    (dict(branches='both_ways'), "branches='both_ways' is unknown"),
    (dict(with_cp='auto'), "with_cp='auto' must be True or False"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSLoRA(64, site='layer1.0', **kwargs)
    with pytest.raises(ValueError, match='at layer1.0'):
        MSLoRA(64, site='layer1.0', **kwargs)


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('with_cp, settings', [
    (False, dict(channels_last=True)),
    (True, {}),
    (True, dict(channels_last=True)),
    (True, runtime.DEVICE_DEFAULTS['cpu']),
])
def test_speed_options_keep_outputs_and_gradients(with_cp, settings, tokens):
    """Maps (ResNet) and pre-norm tokens (Swin): the recompute and the
    runtime's layouts give the stock outputs and gradients."""
    extra = dict(gate=True, global_context=True, pre_norm=tokens)
    ref = MSLoRA(32, rank=16, **extra)
    randomize(ref, 2)
    fast = MSLoRA(32, rank=16, with_cp=with_cp, **extra)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 120, 32) if tokens else torch.randn(2, 32, 12, 10)
    hw = dict(hw_shape=(12, 10)) if tokens else {}
    assert_same_outputs_and_gradients(ref, fast, x, hw, settings)


def saved_sizes(adapter: MSLoRA, x: torch.Tensor, hw: dict,
                rank: int = 16) -> list:
    """The numel of every ``(B, rank, h, w)`` tensor autograd saves in a
    forward of ``adapter`` (0 for the others)."""
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(  # detached: no cycle
            lambda t: sizes.append(t.numel() if t.dim() == 4 and
                                   t.shape[1] == rank else 0) or t.detach(),
            lambda t: t):
        adapter(x.clone().requires_grad_(), **hw)
    return sizes


def computed_rows(adapter: MSLoRA, x: torch.Tensor, hw: dict,
                  monkeypatch) -> tuple:
    """The input rows of every ``H`` computation in a train step of
    ``adapter`` (forward, and backward's recompute), forward's first."""
    rows, delta = [], MSLoRA._delta

    def spy(self, x, hw_shape, out_rows):
        rows.append(hw_shape[0] if x.dim() == 3 else x.shape[2])
        return delta(self, x, hw_shape, out_rows)

    monkeypatch.setattr(MSLoRA, '_delta', spy)
    out = adapter(x.clone().requires_grad_(), **hw)
    forward = list(rows)
    out.square().sum().backward()
    return forward, rows[len(forward):]


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('branches', BRANCHES)
@pytest.mark.parametrize('band_rows', [1, 4, 5, 13])
def test_bands_keep_outputs_and_gradients(band_rows, branches, tokens,
                                          monkeypatch):
    """With ``with_cp``, bands with halos (13 rows: one band) give the
    one-band outputs and gradients, and the recompute computes one band
    and its halo at a time."""
    extra = dict(gate=branches != 'linear', channel_shuffle=True,
                 pre_norm=tokens, branches=branches)
    ref = MSLoRA(32, rank=16, **extra)
    randomize(ref, 3)
    banded = MSLoRA(32, rank=16, with_cp=True, **extra)
    banded.load_state_dict(ref.state_dict())
    x = torch.randn(2, 13 * 10, 32) if tokens else torch.randn(2, 32, 13, 10)
    hw = dict(hw_shape=(13, 10)) if tokens else {}
    assert_same_outputs_and_gradients(ref, banded, x, hw,
                                      dict(band_rows=band_rows))
    with runtime.runtime(**dict(runtime.STOCK, band_rows=band_rows)):
        forward, recomputed = computed_rows(banded, x, hw, monkeypatch)
    halo = 3 if branches != 'linear' else 0
    bands = -(-13 // band_rows)
    assert len(forward) == len(recomputed) == bands
    assert max(recomputed) == min(band_rows + 2 * halo, 13)


def test_bands_are_for_the_recompute_only(monkeypatch):
    """Without ``with_cp`` autograd keeps every band's maps anyway: the
    adapter computes one band whatever ``band_rows`` says (bands would
    only add halos and a concatenated copy; docs/benchmarks.md)."""
    adapter = MSLoRA(32, rank=16)
    randomize(adapter, 3)
    x = torch.randn(2, 32, 13, 10)
    with runtime.runtime(**dict(runtime.STOCK, band_rows=4)):
        assert computed_rows(adapter, x, {}, monkeypatch) == ([13], [])
        assert max(saved_sizes(adapter, x, {})) == 2 * 16 * 13 * 10


def test_runtime_defaults_follow_the_device_and_choices_win():
    """Left alone, each option is the measured default of the input's
    device (docs/benchmarks.md); chosen in code, the choice, for every
    device, until the block ends; the global context always in one band."""
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert set(runtime.DEVICE_DEFAULTS) == {'cpu', 'cuda'}
    with runtime.runtime(**{k: runtime.DEFAULT for k in runtime.OPTIONS}):
        for name in runtime.OPTIONS:
            assert runtime.runtime_option(name, cpu) == \
                runtime.DEVICE_DEFAULTS['cpu'][name]
            assert runtime.runtime_option(name, cuda) == \
                runtime.DEVICE_DEFAULTS['cuda'][name]
            assert runtime.runtime_option(name, torch.device('meta')) == \
                runtime.DEVICE_DEFAULTS['cuda'][name]
        assert runtime.runtime_option('band_rows', cpu) == 32
        with runtime.runtime(band_rows=4, channels_last=False):
            assert runtime.runtime_option('band_rows', cuda) == 4
            assert runtime.runtime_option('channels_last', cpu) is False
            assert runtime.is_chosen('band_rows')
            assert 'band_rows=4' in runtime.describe()
        assert not runtime.is_chosen('band_rows')
        x, hw = torch.randn(2, 32, 13, 10), {}
        pooled = MSLoRA(32, rank=16, global_context=True)
        with runtime.runtime(band_rows=4):
            assert max(saved_sizes(pooled, x, hw)) == 2 * 16 * 13 * 10


def test_with_cp_keeps_the_input_only():
    """``with_cp`` (mmdet's memory switch): autograd keeps the adapter's
    input, not its maps."""
    x = torch.randn(2, 32, 12, 10, requires_grad=True)
    kept = {}
    for with_cp in (True, False):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: sizes.append(t.numel()) or t.detach(),
                lambda t: t):
            MSLoRA(32, rank=16, with_cp=with_cp)(x)
        kept[with_cp] = sum(sizes)
    assert kept[True] < 0.5 * kept[False]


@pytest.mark.parametrize('settings, match', [
    (dict(band_rows=0), 'band_rows=0 must be an int >= 1 or None'),
    (dict(band_rows=True), 'band_rows=True must be an int'),
    (dict(channels_last='yes'), "channels_last='yes' must be True or False"),
    (dict(rows=3), "'rows' is not a runtime option"),
])
def test_invalid_runtime_choices_are_refused(settings, match):
    before = runtime.chosen_options()
    with pytest.raises(ValueError, match=match):
        runtime.set_runtime(**settings)
    assert runtime.chosen_options() == before


def test_environment_variable_sets_the_runtime_and_bad_values_name_it():
    """``MSLORA_RUNTIME`` chooses options for a whole process; a bad value
    is an error naming the variable."""
    code = ('from mslora_mm.core import runtime; import torch; '
            "print(runtime.runtime_option('band_rows', torch.device('cpu')),"
            " runtime.runtime_option('kernel', torch.device('cpu')),"
            " runtime.runtime_option('channels_last', torch.device('cuda')))")
    for value, printed in (('band_rows=16, kernel=stock', '16 stock False'),
                           ('band_rows=none,channels_last=on',
                            'None native True'),
                           ('', '32 native False'),
                           ('fused_branches=0', '32 stock False')):
        out = run_tool(sys.executable, '-c', code, stdout_only=True,
                       env=dict(os.environ, MSLORA_RUNTIME=value))
        assert out.splitlines()[-1].split() == printed.split(), value
        assert ("is read as kernel='stock'" in out) == ('fused' in value)
    out = run_tool(sys.executable, '-c', code, ok=False,
                   env=dict(os.environ, MSLORA_RUNTIME='band_rows=x'))
    assert "MSLORA_RUNTIME='band_rows=x': band_rows='x' must be" in out


def test_runtime_defaults_are_the_documented_ones():
    """docs/method.md's table of the runtime options states
    DEVICE_DEFAULTS."""
    words = {'on': True, 'off': False, 'one band': None,
             **{f'`{k}`': k for k in runtime.KERNELS}}
    rows = {}
    for line in open(f'{ROOT}/docs/method.md'):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 3 and cells[0].strip('`') in runtime.OPTIONS:
            rows[cells[0].strip('`')] = [
                words[v] if v in words else int(v)
                for v in cells[2].split(' / ')]
    assert rows == {option: [runtime.DEVICE_DEFAULTS['cpu'][option],
                             runtime.DEVICE_DEFAULTS['cuda'][option]]
                    for option in runtime.OPTIONS}


@pytest.mark.parametrize('tokens', [False, True])
@pytest.mark.parametrize('band_rows', [None, 4])
def test_recompute_keeps_nothing_but_the_input(tokens, band_rows):
    """with_cp: ``LN_in`` is recomputed too, so after the forward no tensor
    of the input's size is alive besides the input, the output and views of
    them (a pre-norm adapter used to keep ``LN_in(F)``)."""
    import gc
    import warnings
    adapter = MSLoRA(32, rank=16, pre_norm=True, with_cp=True)
    randomize(adapter, 4)
    x = (torch.randn(2, 13 * 10, 32) if tokens else
         torch.randn(2, 32, 13, 10)).requires_grad_()
    # the stock layout: with channels_last the recompute keeps the input's
    # channels-last copy instead (made once, outside it: faster)
    def input_sized():  # storages of tensors of the input's size
        gc.collect()
        with warnings.catch_warnings():  # isinstance on deprecated objects
            warnings.simplefilter('ignore')
            return {t.untyped_storage().data_ptr() for t in gc.get_objects()
                    if isinstance(t, torch.Tensor)
                    and t.numel() == x.numel()}

    before = input_sized()  # whatever else this process holds of that size
    with runtime.runtime(band_rows=band_rows, channels_last=False):
        out = adapter(x, **(dict(hw_shape=(13, 10)) if tokens else {}))
    own = {x.untyped_storage().data_ptr(), out.untyped_storage().data_ptr()}
    assert input_sized() - before - own == set()
    out.sum().backward()  # the recompute still has what it needs
    assert x.grad is not None and adapter.norm_in.weight.grad is not None
