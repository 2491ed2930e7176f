"""The peers MSLoRA is compared with: Mona (an adapter type at the same
sites) and peft LoRA (on the layers of the modules hosting the sites), and
the tuning modes compare_tuning derives from one MSLoRA config."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

from helpers import ROOT, assert_gradients_on_trainable_only
from mmdet.registry import MODELS
from mslora_mm import Mona, adapter_modules, adapter_parameter_names
from mslora_mm.analysis.comparison.tuning import (TUNING_MODES,
                                                  tuning_mode_config)

EUROSAT = osp.join(ROOT, 'configs/experiments/'
                   'efficientnet-lite0_mslora_eurosat5.py')


def mona_reference(m: Mona, x: torch.Tensor) -> torch.Tensor:
    """Mona as published (Yin et al., CVPR 2025; Leiyi-Hu/mona), read
    directly: ``x + up(dropout(GELU(p(m(z)))))``, ``z = down(LN(x) g +
    x gx)``, ``m(z) = mean_k DW_k(z) + z``, ``p(y) = y + conv1x1(y)``."""
    def conv(layer, z):
        return F.conv2d(z, layer.weight, layer.bias, padding=layer.padding,
                        groups=layer.groups)
    ln = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1], ), m.norm.weight,
                      m.norm.bias, m.norm.eps).permute(0, 3, 1, 2)
    z = conv(m.down, ln * m.gamma.view(1, -1, 1, 1) +
             x * m.gammax.view(1, -1, 1, 1))
    y = sum(conv(dw, z) for dw in m.dw) / len(m.dw) + z
    p = y + conv(m.projector, y)
    return x + conv(m.up, F.gelu(p))  # eval: dropout is the identity


def test_mona_is_the_published_adapter():
    torch.manual_seed(0)
    m = Mona(48).eval()
    assert m.rank == 64 and m.kernel_sizes == (3, 5, 7)
    assert torch.all(m.gamma == 1e-6) and torch.all(m.gammax == 1)
    for conv in (m.down, m.up):  # the reference's linear init
        assert torch.all(conv.bias == 0)
        assert 0.015 < conv.weight.std() < 0.025
    for p in m.parameters():  # away from init, for a real comparison
        p.data.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 48, 9, 11)
    torch.testing.assert_close(m(x), mona_reference(m, x))
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(m(tokens, (9, 11)),
                               mona_reference(m, x).flatten(2).transpose(
                                   1, 2))
    m.train()
    assert not torch.equal(m(x), m(x))  # dropout 0.1 before Up
    count = sum(p.numel() for p in m.parameters())
    assert count == 48 * 4 + 2 * 48 * 64 + 64 + 48 + \
        64 * (9 + 25 + 49 + 3) + 64 * 64 + 64


@pytest.mark.parametrize('backbone', [
    dict(type='MSLoRABackbone', sites=['layer*.*'],
         backbone=dict(type='ResNet', depth=18),
         adapter_cfg=dict(type='Mona', rank=16)),
    dict(type='MSLoRAResNet', depth=50,
         adapter_cfg=dict(type='Mona', rank=16)),
    dict(type='MSLoRASwin', embed_dims=32, depths=(2, 2, 2, 2),
         num_heads=(1, 2, 4, 8), window_size=4,
         adapter_cfg=dict(type='Mona', rank=16)),
])
def test_mona_goes_through_the_site_mechanism(backbone):
    """Map sites, ResNet plugins and Swin tokens hold Mona: plain keys plus
    ``.mslora.``, only Mona trains, every Mona gets a gradient."""
    model = MODELS.build(backbone)
    adapters = [a for _, a in adapter_modules(model)]
    assert adapters and all(isinstance(a, Mona) for a in adapters)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        set(adapter_parameter_names(model))
    model.train()
    sum(o.square().mean() for o in model(torch.randn(1, 3, 64, 64))
        ).backward()
    assert_gradients_on_trainable_only(model)


def lite0_cfg() -> Config:
    cfg = Config.fromfile(EUROSAT)
    cfg.model.backbone.backbone.pop('init_cfg')  # no weights needed here
    return cfg


def trainable(backbone_cfg: dict) -> int:
    with torch.random.fork_rng():
        model = MODELS.build(copy.deepcopy(backbone_cfg))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_every_mode_from_one_config():
    base = lite0_cfg()
    mslora = trainable(base.model.backbone.to_dict())
    cfgs = {m: tuning_mode_config(copy.deepcopy(base), m)
            for m in TUNING_MODES}
    assert cfgs['mslora'].to_dict() == base.to_dict()
    assert cfgs['frozen'].model.backbone.type == 'FrozenBackbone'
    assert cfgs['full'].model.backbone.type == 'EfficientNetLite'
    assert cfgs['mona'].model.backbone.adapter_cfg == dict(type='Mona',
                                                           rank=64)
    assert cfgs['mona'].model.backbone.sites == base.model.backbone.sites
    lora = cfgs['lora'].model.backbone
    assert lora.type == 'LoRABackbone' and len(lora.hosts) == 15  # 1-15
    assert cfgs['lora'].optim_wrapper.frozen_backbone is False
    # the matched rank: LoRA's trainable count within 20% of MSLoRA's
    count = trainable(lora.to_dict())
    assert abs(count / mslora - 1) <= 0.2, (count, mslora, lora.rank)
    assert trainable(cfgs['frozen'].model.backbone.to_dict()) == 0
    fixed = tuning_mode_config(copy.deepcopy(base), 'lora', lora_rank=2)
    assert fixed.model.backbone.rank == 2


def test_lora_backbone_trains_only_lora_with_a_frozen_body():
    cfg = tuning_mode_config(lite0_cfg(), 'lora').model.backbone.to_dict()
    model = MODELS.build(cfg)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all('lora_' in n for n in names)
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, )) or type(m).__name__ == \
                'FrozenBatchNorm2d':
            assert not m.training
    model(torch.randn(2, 3, 64, 64))[-1].square().mean().backward()
    for name, p in model.named_parameters():  # B starts at zero: A's is 0
        assert (p.grad is not None) == p.requires_grad, name
        if 'lora_B' in name:
            assert p.grad.abs().sum() > 0, name


def test_lora_backbone_loads_pretrained_weights_before_peft(tmp_path):
    """peft renames the layers it wraps (``.base_layer.``): the builder
    loads ``init_cfg`` first, so the frozen body is the checkpoint's."""
    plain_cfg = dict(type='ResNet', depth=18)
    torch.manual_seed(1)
    plain = MODELS.build(plain_cfg)
    ckpt = tmp_path / 'r18.pth'
    torch.save({'state_dict': plain.state_dict()}, ckpt)
    model = MODELS.build(dict(
        type='LoRABackbone', rank=4, hosts=['layer1.0'],
        backbone=dict(plain_cfg, init_cfg=dict(type='Pretrained',
                                               checkpoint=str(ckpt)))))
    loaded = model.state_dict()
    assert torch.equal(loaded['layer1.0.conv1.base_layer.weight'],
                       plain.state_dict()['layer1.0.conv1.weight'])
    assert torch.equal(loaded['layer4.1.conv2.weight'],
                       plain.state_dict()['layer4.1.conv2.weight'])
