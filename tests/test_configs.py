"""Every shipped config loads, builds its model and optimizer wrapper, and
(except the full fine-tuning baseline) optimises no backbone weight but
the adapters."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from conftest import ROOT
from mmdet.registry import MODELS
from mslora_mm import adapter_parameter_names

CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                       recursive=True))


def test_configs_found():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    assert cfg.custom_imports['imports'] == ['mslora_mm']
    model = MODELS.build(cfg.model)  # no init_weights: nothing downloads
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    in_optim = {id(p) for g in optim.param_groups for p in g['params']}
    backbone = {id(p): n for n, p in model.backbone.named_parameters()}
    optimised = {n for i, n in backbone.items() if i in in_optim}
    if 'full-ft' in path:  # everything but mmdet's frozen stem + stage 1
        assert optimised == {n for n in backbone.values()
                             if n.startswith(('layer2', 'layer3', 'layer4'))}
    else:
        assert optimised == set(adapter_parameter_names(model.backbone))
    for name, p in model.named_parameters():
        if not name.startswith('backbone.'):
            assert id(p) in in_optim, name


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
