"""Frozen layers: same forward and input gradient, no saved activations."""
import copy
from typing import Callable, Dict

import pytest
import torch
import torch.nn as nn

from helpers import randomise_batchnorms
from mmdet.registry import MODELS
from mslora_mm import (FrozenBatchNorm2d, FrozenConv2d, FrozenLinear,
                       MaskReLU, adapter_parameter_names,
                       convert_frozen_layers)

STOCK = {FrozenConv2d: nn.Conv2d, FrozenLinear: nn.Linear,
         FrozenBatchNorm2d: nn.BatchNorm2d, MaskReLU: nn.ReLU}


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


def to_stock(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every frozen layer back to the stock class
    (the autograd PyTorch would use)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if type(m) in STOCK:
            m.__class__ = STOCK[type(m)]
    return model


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


def test_only_weights_scales_and_masks_are_saved():
    frozen = body()
    stock = copy.deepcopy(frozen)
    convert_frozen_layers(frozen)
    x = torch.randn(2, 8, 17, 17, requires_grad=True)
    weights = sum(p.numel() * 4 for p in frozen.parameters()
                  if p.dim() > 1)
    relu_masks = 2 * (2 * 16 * 9 * 9)  # two ReLUs, 1 byte per element
    saved = saved_bytes(lambda: frozen(x))
    assert saved[torch.bool] == relu_masks
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
        outs = [model(x), stock(x)]
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        sum(o.square().mean() for o in outs[0]).backward()
        sum(o.square().mean() for o in outs[1]).backward()
        grads = dict(stock.named_parameters())
        names = adapter_parameter_names(model)
        assert len(names) > 0
        for name, p in model.named_parameters():
            assert (p.grad is not None) == (name in names), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, grads[name].grad,
                                           rtol=1e-4, atol=1e-6)
        kept = saved_bytes(lambda: model(x), model)
        stock_kept = saved_bytes(lambda: stock(x), stock)
        assert sum(kept.values()) < 0.5 * stock_kept[torch.float32], \
            (kept, stock_kept)
