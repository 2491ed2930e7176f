"""Frozen layers: same forward and input gradient, no saved activations."""
import copy
from typing import Callable, Dict

import pytest
import torch
import torch.nn as nn

from helpers import STOCK, randomise_batchnorms, to_stock
from mmdet.registry import MODELS
from mslora_mm import (FrozenBatchNorm2d, FrozenConv2d, FrozenLinear,
                       FrozenWindowMSA, MaskReLU, adapter_modules,
                       adapter_parameter_names, convert_frozen_layers)



def saved_bytes(fn: Callable[[], torch.Tensor],
                model: nn.Module = None) -> Dict[torch.dtype, int]:
    """Bytes autograd saves for backward while ``fn`` runs, per dtype; a
    tensor saved by several nodes counts once, ``model``'s parameters and
    buffers (stored anyway) not at all."""
    seen = {t.data_ptr() for t in model.state_dict().values()} \
        if model is not None else set()
    total = {}

    def pack(t):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total[t.dtype] = total.get(t.dtype, 0) + \
                t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def assert_adapters_match_stock(model: nn.Module, stock: nn.Module,
                                x: torch.Tensor) -> None:
    """``model`` (frozen layers) and ``stock`` (its stock-layer copy): same
    outputs, and gradients on exactly the adapters, equal to stock
    autograd's."""
    outs = [model(x), stock(x)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for out in outs:
        sum(o.square().mean() for o in out).backward()
    grads = dict(stock.named_parameters())
    names = adapter_parameter_names(model)
    assert len(names) > 0
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in names), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name].grad,
                                       rtol=1e-4, atol=1e-6)


def body() -> nn.Sequential:
    """A frozen conv body: strided, dilated and grouped convs, BN, ReLU and
    a linear layer."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4, bias=False),
        nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.Flatten(2),
        nn.Linear(81, 5))
    randomise_batchnorms(model)
    model.requires_grad_(False)
    return model.eval()


@pytest.mark.parametrize('layout', [torch.contiguous_format,
                                    torch.channels_last])
def test_same_outputs_and_input_gradients(layout):
    stock = body()
    frozen = copy.deepcopy(stock)
    tensors = dict(frozen.state_dict(keep_vars=True))
    convert_frozen_layers(frozen)
    assert [type(m) for m in frozen] == [
        FrozenConv2d, FrozenBatchNorm2d, MaskReLU, FrozenConv2d,
        FrozenBatchNorm2d, MaskReLU, nn.Flatten, FrozenLinear]
    # the very same tensors under the same keys
    assert all(v is tensors[k]
               for k, v in frozen.state_dict(keep_vars=True).items())
    assert tensors.keys() == frozen.state_dict().keys()
    x = torch.randn(2, 8, 17, 17).contiguous(memory_format=layout)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ys = [stock(xs[0]), frozen(xs[1])]
    torch.testing.assert_close(ys[1], ys[0])
    grad = torch.randn_like(ys[0])
    ys[0].backward(grad)
    ys[1].backward(grad)
    torch.testing.assert_close(xs[1].grad, xs[0].grad)
    with torch.no_grad():  # inference: the stock layers' path
        torch.testing.assert_close(frozen(x), stock(x))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_mask_relu_backward_is_relus_even_for_non_finite_gradients(dtype):
    """Zero wherever the input was <= 0 (inf and nan gradients too), the
    gradient elsewhere, in the gradient's dtype: ReLU's own backward."""
    x = torch.tensor([[-1.0, 0.0, 2.0, -3.0, 4.0, 5.0]], dtype=dtype)
    grad = torch.tensor([[float('inf'), float('nan'), 7.0, -float('inf'),
                          float('inf'), -2.0]], dtype=dtype)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    nn.ReLU()(xs[0]).backward(grad)
    MaskReLU()(xs[1]).backward(grad)
    assert xs[1].grad.dtype == dtype
    torch.testing.assert_close(xs[1].grad, xs[0].grad, equal_nan=True)
    assert xs[1].grad[0, :2].eq(0).all() and xs[1].grad[0, 3] == 0


def test_only_weights_scales_and_masks_are_saved():
    frozen = body()
    stock = copy.deepcopy(frozen)
    convert_frozen_layers(frozen)
    x = torch.randn(2, 8, 17, 17, requires_grad=True)
    weights = sum(p.numel() * 4 for p in frozen.parameters()
                  if p.dim() > 1)
    relu_masks = 2 * (2 * 16 * 9 * 9)  # two ReLUs, 1 byte per element
    saved = saved_bytes(lambda: frozen(x))
    assert saved[torch.int8] == relu_masks
    assert saved[torch.float32] <= weights + 2 * 16 * 4  # + BN scales
    stock_saved = saved_bytes(lambda: stock(x))
    assert stock_saved[torch.float32] >= weights + x.numel() * 4 + \
        4 * (2 * 16 * 9 * 9 * 4)  # input; BN inputs and ReLU outputs


def test_trainable_layers_are_left_as_they_are():
    model = body()
    model[3].weight.requires_grad_(True)
    model[1].train()
    convert_frozen_layers(model)
    assert type(model[3]) is nn.Conv2d
    assert type(model[0]) is FrozenConv2d
    # a converted layer unfrozen later trains as the stock layer does
    model[0].weight.requires_grad_(True)
    x = torch.randn(2, 8, 17, 17)
    model[0](x).sum().backward()
    stock = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    stock.load_state_dict(model[0].state_dict())
    stock(x).sum().backward()
    torch.testing.assert_close(model[0].weight.grad, stock.weight.grad)


def test_frozen_batchnorm_in_train_mode_is_batchnorm():
    bn = body()[1]
    frozen = FrozenBatchNorm2d.convert(copy.deepcopy(bn))
    bn.train()
    frozen.train()
    x = torch.randn(4, 16, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x))
    torch.testing.assert_close(frozen.running_mean, bn.running_mean)


def test_adapter_gradients_equal_stock_autograd():
    """In an MSLoRA ResNet (BasicBlock and Bottleneck), every adapter gets
    the gradient stock autograd gives, and the body saves far less."""
    for depth in (18, 50):
        model = MODELS.build(dict(type='MSLoRAResNet', depth=depth,
                                  adapter_cfg=dict(rank=8)))
        randomise_batchnorms(model)
        for _, p in model.named_parameters():
            if p.requires_grad:  # non-zero Up: gradients reach Pv, Pa, T
                nn.init.normal_(p, std=0.1)
        model.train()
        stock = to_stock(model)
        assert not any(type(m) in STOCK for m in stock.modules())
        x = torch.randn(2, 3, 64, 64)
        assert_adapters_match_stock(model, stock, x)
        kept = saved_bytes(lambda: model(x), model)
        stock_kept = saved_bytes(lambda: stock(x), stock)
        assert sum(kept.values()) < 0.5 * stock_kept[torch.float32], \
            (kept, stock_kept)


def test_autocast_dtypes_and_input_gradients_match_stock():
    """Under bf16 autocast the frozen layers return what the stock layers
    return (BN keeps its input's dtype) and backpropagate without dtype
    errors to the same input gradient."""
    stock = body()
    frozen = copy.deepcopy(stock)
    convert_frozen_layers(frozen)
    x = torch.randn(2, 8, 17, 17)
    xs, ys = [], []
    for model in (stock, frozen):
        xs.append(x.clone().requires_grad_())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            ys.append(model(xs[-1]))
            half = torch.randn(2, 16, 5, 5, dtype=torch.bfloat16)
            assert model[1](half).dtype == torch.bfloat16
        ys[-1].float().square().sum().backward()
    assert ys[1].dtype == ys[0].dtype == torch.bfloat16
    torch.testing.assert_close(ys[1], ys[0], rtol=2e-2, atol=2e-2)
    assert xs[1].grad.dtype == torch.float32
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=5e-2, atol=5e-2)


@pytest.fixture
def process_group():
    """A one-process gloo group (mmcv's SyncBatchNorm asks for its size)."""
    import torch.distributed as dist
    from helpers import free_port
    dist.init_process_group('gloo', init_method='tcp://127.0.0.1:'
                            f'{free_port()}',
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize('implementation', ['torch', 'mmcv'])
def test_sync_bn_conversion_leaves_frozen_batchnorms(implementation,
                                                     process_group):
    """mmengine's ``sync_bn`` converts every ``_BatchNorm``: the frozen ones
    must stay frozen and activation-free, trainable ones still convert."""
    from mmengine.model import convert_sync_batchnorm
    model = nn.ModuleDict(dict(
        backbone=MODELS.build(dict(type='MSLoRAResNet', depth=18,
                                   adapter_cfg=dict(rank=8))),
        head=nn.BatchNorm2d(8)))
    tensors = dict(model.state_dict(keep_vars=True))
    converted = convert_sync_batchnorm(model, implementation)
    norms = [m for n, m in converted.named_modules()
             if n.startswith('backbone.') and 'Norm' in type(m).__name__
             and 'mslora' not in n]
    assert norms and all(type(m) is FrozenBatchNorm2d for m in norms)
    assert 'SyncBatchNorm' in type(converted['head']).__name__
    state = converted.state_dict(keep_vars=True)
    assert all(state[k] is v for k, v in tensors.items()
               if k.startswith('backbone.'))
    converted['backbone'].train()
    assert not any(m.training for m in norms)


def test_swin_frozen_body_swaps_mmcv_subclasses_and_stays_exact():
    """mmcv's ``Linear`` (the FFN's) is ``nn.Linear`` for torch >= 1.6: every
    frozen Linear of an MSLoRA Swin becomes activation-free, outputs and
    adapter gradients equal stock autograd, and restoring gives back mmcv's
    class."""
    from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
    model = MODELS.build(dict(type='MSLoRASwin', embed_dims=32,
                              depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                              window_size=4, drop_path_rate=0.,
                              adapter_cfg=dict(rank=8)))
    frozen = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear)
              and not any(p.requires_grad for p in m.parameters())]
    assert len(frozen) == 8 * 4 + 3  # qkv, proj, 2 FFN per block; mergings
    assert all(type(m) is FrozenLinear for _, m in frozen), \
        [(n, type(m)) for n, m in frozen if type(m) is not FrozenLinear]
    ffn = model.get_submodule('stages.0.blocks.0.ffn.layers.0.0')
    assert ffn.stock_type is MMCVLinear
    for _, p in model.named_parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.1)
    model.train()
    stock = to_stock(model)
    assert type(stock.get_submodule('stages.0.blocks.0.ffn.layers.0.0')) \
        is MMCVLinear
    assert type(model.get_submodule('stages.0.blocks.1.attn.w_msa')) \
        is FrozenWindowMSA
    assert_adapters_match_stock(model, stock, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize('shifted', [False, True])
def test_window_attention_saves_no_attention_matrix(shifted):
    """Frozen Swin window attention (flash kernel, bias and shift mask as
    one additive mask): the stock outputs and input gradients, and autograd
    keeps no ``(B * nW, heads, N, N)`` attention matrix, where the stock
    attention keeps one; stock again with active attention dropout."""
    from mmdet.models.backbones.swin import WindowMSA
    torch.manual_seed(0)
    stock = WindowMSA(64, 2, (7, 7), attn_drop_rate=0.5).eval()
    nn.init.normal_(stock.relative_position_bias_table, std=1.)
    stock.requires_grad_(False)
    windows, n = 6, 49
    mask = torch.where(torch.rand(windows, n, n) > 0.7, -100., 0.) \
        if shifted else None
    holder = nn.ModuleDict(dict(attn=copy.deepcopy(stock)))
    convert_frozen_layers(holder)
    frozen = holder.attn
    assert type(frozen) is FrozenWindowMSA
    x = torch.randn(3 * windows, n, 64)
    xs, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs = [stock(xs, mask), frozen(xf, mask)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    g = torch.randn_like(outs[0])
    for out in outs:
        out.backward(g)
    torch.testing.assert_close(xf.grad, xs.grad, rtol=1e-4, atol=1e-6)
    attention = x.shape[0] * 2 * n * n
    for module, inputs, has_matrix in ((stock, xs, True),
                                       (frozen, xf, False)):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: sizes.append(t.numel()) or t, lambda t: t):
            module(inputs, mask)
        assert (attention in sizes) is has_matrix, sizes
    frozen.train()  # attention dropout active: the stock computation
    torch.manual_seed(2)
    dropped = frozen(xf, mask)
    torch.manual_seed(2)
    torch.testing.assert_close(dropped, WindowMSA.forward(frozen, xf, mask))
    assert not torch.allclose(dropped, outs[1])


@pytest.mark.parametrize('cfg', [
    dict(type='MSLoRAResNet', depth=50, adapter_cfg=dict(rank=8)),
    dict(type='MSLoRASwin', embed_dims=32, depths=(2, 2, 2, 2),
         num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=0.3,
         adapter_cfg=dict(rank=8)),
    dict(type='MSLoRABackbone', backbone=dict(type='mmpretrain.ConvNeXt',
                                              arch='atto'),
         sites=['stages.*.*'], adapter_cfg=dict(rank=8)),
])
def test_frozen_with_cp_recomputes_blocks_exactly(cfg):
    """``frozen_with_cp=True``: the modules hosting adapters recompute their
    frozen forward in backward (drop-path draws replayed): same outputs and
    adapter gradients. Blocks that save LayerNorm, GELU and softmax inputs
    (Swin, ConvNeXt) keep far less; a ResNet's frozen layers already keep
    only 1-byte masks, less than the block inputs checkpointing keeps."""
    from mslora_mm import remove_adapters
    torch.manual_seed(0)
    plain = MODELS.build(cfg)
    randomise_batchnorms(plain)
    for _, p in plain.named_parameters():
        if p.requires_grad:
            nn.init.normal_(p, std=0.1)
    recomputed = MODELS.build(dict(cfg, frozen_with_cp=True))
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads, outs = [], []
    for model in (plain, recomputed):
        model.train()
        torch.manual_seed(1)
        out = model(x)
        sum(o.square().mean() for o in out).backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters()
                      if p.grad is not None})
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a)
    assert grads[0].keys() == grads[1].keys() == set(
        adapter_parameter_names(plain))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name])
    torch.manual_seed(1)
    kept = sum(saved_bytes(lambda: recomputed(x), recomputed).values())
    torch.manual_seed(1)
    stock = sum(saved_bytes(lambda: plain(x), plain).values())
    if cfg['type'] != 'MSLoRAResNet':
        assert kept < 0.6 * stock, (kept, stock)
    remove_adapters(recomputed)  # the plain module's own forward again
    assert not any('forward' in vars(m) for m in recomputed.modules())


@pytest.mark.parametrize('cfg', [
    dict(type='MSLoRASwin', embed_dims=32, depths=(2, 2, 2, 2),
         num_heads=(1, 2, 4, 8), window_size=4, adapter_cfg=dict(rank=8)),
    dict(type='MSLoRABackbone', backbone=dict(type='mmpretrain.ConvNeXt',
                                              arch='atto'),
         sites=['stages.*.*'], adapter_cfg=dict(rank=8, with_cp=True)),
])
def test_frozen_with_cp_recomputes_output_adapters_with_their_host(cfg):
    """An adapter attached to its host's output (a forward hook) runs
    inside the host's recompute: autograd keeps the host's input, never the
    adapter's (the host's un-adapted output), as a plugin inside a ResNet
    block already does; the adapter runs once per forward."""
    torch.manual_seed(0)
    model = MODELS.build(dict(cfg, frozen_with_cp=True))
    model.train()
    inputs = []  # kept alive, so that no later tensor reuses their memory
    for _, adapter in adapter_modules(model):  # hosts a gradient reaches
        adapter.register_forward_pre_hook(lambda m, args: inputs.append(
            args[0]) if args[0].requires_grad else None)
    saved = set()

    def pack(t):
        saved.add(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randn(2, 3, 64, 64))
    # all but the first, whose host's input (the frozen stem's) has none
    assert len(inputs) == len(list(adapter_modules(model))) - 1 > 0
    assert not {x.data_ptr() for x in inputs} & saved
    sum(o.square().mean() for o in out).backward()
    assert all(p.grad is not None for n, p in model.named_parameters()
               if 'mslora.up' in n)


def test_recomputed_forward_of_a_module_returning_a_tuple():
    """``RecomputedForward`` wraps any module's forward: a tuple output
    comes back as it is, with its gradients."""
    from mslora_mm.core.freezing import RecomputedForward

    class Pair(nn.Module):
        def forward(self, x):
            return x.sin(), x.cos()

    module = Pair()
    module.forward = RecomputedForward(module)
    x = torch.randn(3, requires_grad=True)
    a, b = module(x)
    (a + b).sum().backward()
    torch.testing.assert_close(x.grad, x.cos() - x.sin())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_frozen_batchnorm_computes_in_the_inputs_dtype(dtype):
    """Under autocast the frozen BatchNorm computes in its input's dtype
    (no float32 copy of the map) and saves only its C scales: output and
    input gradient equal stock BatchNorm's within the dtype's tolerance."""
    torch.manual_seed(0)
    stock = nn.BatchNorm2d(16).eval().requires_grad_(False)
    randomise_batchnorms(stock)
    frozen = FrozenBatchNorm2d.convert(copy.deepcopy(stock))
    x = torch.randn(2, 16, 9, 7).to(dtype)
    outs = []
    for layer in (stock, frozen):
        xi = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=dtype):
            kept = saved_bytes(lambda: outs.append((layer(xi), xi)))
        y, xi = outs[-1]
        y.float().square().sum().backward()
        outs[-1] = (y, xi.grad, kept)
    (y0, g0, _), (y1, g1, kept) = outs
    assert y1.dtype == y0.dtype == dtype and g1.dtype == g0.dtype == dtype
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else \
        dict(rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(y1, y0, **tol)
    torch.testing.assert_close(g1, g0, **tol)
    assert sum(kept.values()) <= 16 * 4, kept  # the scales, not the map
    assert torch.float32 not in kept or kept[torch.float32] <= 16 * 4


@pytest.mark.parametrize('conv', [
    dict(in_channels=16, out_channels=24, kernel_size=1),
    dict(in_channels=16, out_channels=24, kernel_size=3, padding=1),
    dict(in_channels=16, out_channels=24, kernel_size=3, stride=2,
         padding=1),
    dict(in_channels=16, out_channels=16, kernel_size=7, padding=3,
         groups=16)])
def test_conv_input_gradient_keeps_the_memory_format(conv):
    """A channels-last input gets a channels-last input gradient, as stock
    autograd gives it (1x1, 3x3, strided, depthwise 7x7), equal to it."""
    torch.manual_seed(0)
    stock = nn.Conv2d(**conv).requires_grad_(False)
    frozen = FrozenConv2d.convert(copy.deepcopy(stock))
    for fmt in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(2, 16, 11, 9).contiguous(memory_format=fmt)
        grads = []
        for layer in (stock, frozen):
            xi = x.clone().requires_grad_()
            layer(xi).square().sum().backward()
            grads.append(xi.grad)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)
        for g in grads:
            assert g.is_contiguous(memory_format=fmt), (fmt, g.stride())
