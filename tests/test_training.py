"""Inside a real mmdet Mask R-CNN: what trains, what stays frozen."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.optim import OptimWrapper, build_optim_wrapper

from helpers import (build_detector, fake_batch, optimised_names,
                     randomise_batchnorms, to_stock)
from mmdet.registry import MODELS
from mslora_mm import adapter_parameter_names

R18 = dict(type='MSLoRAResNet', depth=18, adapter_cfg=dict(rank=16))
SWIN = dict(type='MSLoRASwin', embed_dims=32, depths=(2, 2, 2, 2),
            num_heads=(1, 2, 4, 8), window_size=4, out_indices=(0, 1, 2, 3))


def build_optim(model, **constructor_args) -> OptimWrapper:
    return build_optim_wrapper(model, dict(
        constructor='MSLoRAOptimWrapperConstructor',
        **constructor_args,
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0.)))


@pytest.mark.parametrize('backbone, channels', [(R18, (64, 128, 256, 512)),
                                                (SWIN, (32, 64, 128, 256))])
def test_steps_change_adapters_only_in_backbone(backbone, channels):
    model = build_detector(backbone, in_channels=channels)
    optim = build_optim(model)
    adapters = set(adapter_parameter_names(model.backbone))
    assert optimised_names(model, optim) == {
        n for n, _ in model.named_parameters()
        if not n.startswith('backbone.')} | {f'backbone.{n}' for n in adapters}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    data = fake_batch(model)
    for _ in range(3):  # step 0 moves Up off zero, later steps the rest
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optim.update_params(loss)
    after = model.state_dict()
    for key, value in after.items():
        changed = not torch.equal(before[key], value)
        is_adapter = key.startswith('backbone.') and \
            key[len('backbone.'):] in adapters
        if key.startswith('backbone.') and not is_adapter:
            assert not changed, f'frozen {key} changed'  # BN stats included
        if is_adapter:
            assert changed, f'adapter {key} did not train'


def test_constructor_refuses_trainable_backbone():
    model = build_detector(dict(type='ResNet', depth=18))
    with pytest.raises(ValueError, match='optim_wrapper.frozen_backbone=False'):
        build_optim(model)
    optim = build_optim(model, frozen_backbone=False)
    assert optimised_names(model, optim) == {
        n for n, p in model.named_parameters() if p.requires_grad}


def test_constructor_refuses_nothing_to_train():
    model = build_detector(R18)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameters'):
        build_optim(model)


def test_adamw_is_fused_where_the_runtime_says_so():
    """The runtime's ``fused_optimizer`` (on for CUDA, off for the CPU)
    makes the constructor's Adam/AdamW ``fused=True`` for every mode alike
    (the frozen backbone and full fine-tuning); a config's own ``fused``
    wins, and other optimizers are left as configured. A fused step moves
    the parameters as the for-each step does."""
    from mslora_mm.core.runtime import runtime
    model = build_detector(R18)
    assert build_optim(model).optimizer.defaults['fused'] is None  # CPU
    with runtime(fused_optimizer=True):
        fused = build_optim(model)
        assert fused.optimizer.defaults['fused'] is True
        full = build_optim(build_detector(dict(type='ResNet', depth=18)),
                           frozen_backbone=False)
        assert full.optimizer.defaults['fused'] is True
        own = build_optim_wrapper(model, dict(
            constructor='MSLoRAOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, fused=False)))
        assert own.optimizer.defaults['fused'] is False
        sgd = build_optim_wrapper(model, dict(
            constructor='MSLoRAOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=1e-3)))
        assert 'fused' not in sgd.optimizer.defaults or \
            not sgd.optimizer.defaults['fused']
    params = [p for p in model.parameters() if p.requires_grad][:4]
    moved = []
    for flag in (None, True):
        copies = [p.detach().clone().requires_grad_() for p in params]
        optim = torch.optim.AdamW(copies, lr=1e-2, fused=flag)
        for c in copies:
            c.grad = torch.ones_like(c)
        optim.step()
        moved.append(copies)
    for a, b in zip(*moved):
        torch.testing.assert_close(a, b)


def test_paramwise_cfg_is_honoured():
    model = build_detector(R18)
    optim = build_optim(model)
    decay = {id(p): g['weight_decay'] for g in optim.param_groups
             for p in g['params']}
    adapter = model.backbone.layer1[0].mslora
    assert decay[id(adapter.norm.weight)] == 0.0
    assert decay[id(adapter.pv.weight)] == 0.05


def test_param_groups_are_plain_dicts_that_dynamo_can_step():
    """Groups built from a config are plain ``dict``s, not ``ConfigDict``s
    (dynamo cannot trace an optimizer step over those: mmengine's
    ``compile`` option compiles ``train_step``, the step included)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    optim = build_optim_wrapper(model, ConfigDict(
        constructor='MSLoRAOptimWrapperConstructor', frozen_backbone=False,
        optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0.)))
    assert {type(g) for g in optim.param_groups} == {dict}
    before = model[0].weight.detach().clone()

    @torch.compile(backend='eager', fullgraph=False)
    def step(x):
        loss = model(x).square().mean()
        optim.update_params(loss)
        return loss

    step(torch.randn(2, 3, 8, 8))
    assert not torch.equal(model[0].weight, before)


R50 = dict(type='MSLoRAResNet', depth=50, adapter_cfg=dict(rank=16))


@pytest.mark.parametrize('backbone', [R18, R50, SWIN],
                         ids=['r18', 'r50', 'swin'])
def test_bf16_autocast_step_matches_fp32(backbone):
    """``--amp`` on the backbone: a train step under bf16 autocast runs and
    gives every adapter a finite gradient, within bf16 tolerance of fp32:
    overall, and per tensor within a bf16 rounding per frozen BatchNorm of
    what stock PyTorch layers under the same autocast give."""
    if 'Swin' in backbone['type']:  # deterministic steps to compare
        backbone = dict(backbone, drop_path_rate=0.0)
    torch.manual_seed(0)
    model = MODELS.build(backbone)
    randomise_batchnorms(model)
    for name in adapter_parameter_names(model):  # non-zero Up: all get grads
        torch.nn.init.normal_(model.get_parameter(name), std=0.05)
    model.train()
    stock = to_stock(model).train()
    x = torch.randn(2, 3, 64, 64)
    # a linear loss: its gradient does not vanish behind output LayerNorms
    weights = [torch.randn(o.shape) for o in model(x)]

    def grads(net: torch.nn.Module, amp: bool) -> dict:
        net.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            loss = sum((o.float() * w).mean()
                       for o, w in zip(net(x), weights))
        loss.backward()
        return {n: p.grad for n, p in net.named_parameters()
                if p.requires_grad}

    fp32, bf16, stock_bf16 = grads(model, False), grads(model, True), \
        grads(stock, True)
    assert fp32.keys() == set(adapter_parameter_names(model))
    for name, g in fp32.items():
        assert torch.isfinite(bf16[name]).all(), name
        assert g.abs().sum() > 0, name
        error, stock_error = (bf16[name] - g).norm(), \
            (stock_bf16[name] - g).norm()
        # the frozen BatchNorms compute in bf16 (stock BN in float32 under
        # CPU autocast): one more bf16 rounding (2^-8) per BN layer
        assert error <= 3 * stock_error + 0.02 * g.norm(), name
    flat = [torch.cat([g[n].flatten() for n in fp32]) for g in (fp32, bf16)]
    assert (flat[1] - flat[0]).norm() < 0.1 * flat[0].norm()
