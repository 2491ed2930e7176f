"""Every shipped config loads, builds its model and optimizer wrapper, and
(except the full fine-tuning baseline) optimises no backbone weight but
the adapters."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from helpers import ROOT
from mmdet.registry import MODELS
from helpers import optimised_names
from mslora_mm import adapter_parameter_names

CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                       recursive=True) if '_base_' not in p)


def test_configs_found():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds(path):
    from mmengine.registry import DefaultScope, init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, path))
    assert 'mslora_mm' in cfg.custom_imports['imports']
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)  # as the runner does
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)  # no init_weights: no download
        if 'optim_wrapper' not in cfg:  # evaluation only
            assert cfg.test_dataloader and cfg.test_evaluator
            return
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
    names = optimised_names(model, optim)
    optimised = {n[len('backbone.'):] for n in names
                 if n.startswith('backbone.')}
    backbone = [n for n, _ in model.backbone.named_parameters()]
    if 'full-ft' in path and scope == 'mmdet':
        # everything but mmdet's frozen stem + stage 1
        assert optimised == {n for n in backbone
                             if n.startswith(('layer2', 'layer3', 'layer4'))}
    elif 'full-ft' in path:
        assert optimised == set(backbone)
    elif 'linear-probe' in path:  # frozen by train() at the latest
        model.train()
        assert not any(p.requires_grad for p in model.backbone.parameters())
    else:
        assert optimised == set(adapter_parameter_names(model.backbone))
    assert {n for n, _ in model.named_parameters()
            if not n.startswith('backbone.')} <= names


def test_main_config_recipe():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn_r50_mslora_1x.py'))
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://resnet50'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4,
                                               weight_decay=0.05)
    assert cfg.train_cfg.max_epochs == 12
    assert [s['type'] for s in cfg.param_scheduler] == [
        'LinearLR', 'CosineAnnealingLR']
    assert cfg.param_scheduler[1]['eta_min'] == 0.0
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    swin = Config.fromfile(
        osp.join(ROOT, 'configs/swin/mask_rcnn_swin-b_mslora_1x.py'))
    assert swin.optim_wrapper.optimizer.lr == 1e-4
    assert swin.model.backbone.convert_weights
    assert '22k' in swin.model.backbone.init_cfg.checkpoint


def test_demo_adapters_receive_gradients():
    """The demo's randomly initialised backbone must let gradients reach
    every adapter (mmdet's default zero_init_residual zeroes each
    Bottleneck's norm3, which cuts the after_conv2 adapters off)."""
    import torch
    from helpers import assert_gradients_on_trainable_only, fake_batch
    from mslora_mm import adapter_modules
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/demo/mask_rcnn_r50_mslora_demo.py'))
    model = MODELS.build(cfg.model)
    model.init_weights()
    for _, adapter in adapter_modules(model.backbone):  # off the identity
        torch.nn.init.normal_(adapter.up.weight, std=0.01)
    model.train()
    losses = model(**fake_batch(model, size=128), mode='loss')
    model.parse_losses(losses)[0].backward()
    assert_gradients_on_trainable_only(model.backbone)
