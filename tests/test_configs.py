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
from mslora_mm import adapter_modules, adapter_parameter_names

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


def _learning_rates(cfg: Config, epoch_length: int) -> list:
    """The learning rate of each training iteration under ``cfg``'s
    schedulers, an ``end`` left out meaning the training's end (as
    mmengine's Runner builds them)."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    max_epochs = cfg.train_cfg.max_epochs
    wrapper = OptimWrapper(torch.optim.AdamW(
        [torch.nn.Parameter(torch.zeros(1))],
        lr=cfg.optim_wrapper.optimizer.lr))
    schedulers = []
    for s in cfg.param_scheduler:
        s = dict(s)
        s.setdefault('end', max_epochs if s.get('by_epoch', True)
                     else max_epochs * epoch_length)
        schedulers.append(PARAM_SCHEDULERS.build(s, default_args=dict(
            optimizer=wrapper, epoch_length=epoch_length)))
    rates = []
    for _ in range(max_epochs):
        for _ in range(epoch_length):
            rates.append(wrapper.get_lr()['lr'][0])
            for s in schedulers:
                if not s.by_epoch:
                    s.step()
        for s in schedulers:
            if s.by_epoch:
                s.step()
    return rates


@pytest.mark.parametrize('name', [
    'efficientnet-lite0_mslora_eurosat5',
    'efficientnet-lite0_mslora_eurosat5-100pc',
    'efficientnet-lite0_mslora_eurosat5-20pc',
    'efficientnet-lite0_mslora_hymenoptera'])
def test_classifier_schedules_end_with_the_training(name):
    """The Lite0 classifiers' cosine decay reaches zero at the training's
    last iteration, whatever ``train_cfg.max_epochs`` is: a config (or
    ``--cfg-options``) changes the length alone."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/experiments', name + '.py'))
    lr = cfg.optim_wrapper.optimizer.lr
    for max_epochs in (cfg.train_cfg.max_epochs, 3):
        cfg.train_cfg.max_epochs = max_epochs
        rates = _learning_rates(cfg, epoch_length=200)
        assert len(rates) == 200 * max_epochs
        assert rates[0] == pytest.approx(0.1 * lr)  # the warm-up's start
        assert max(rates) > 0.5 * lr
        assert rates[-1] < 0.01 * lr  # decayed to the end, not before
        assert rates[-2] > rates[-1]


def test_neu_det_pipelines_are_mmdets_at_its_scale():
    """NEU-DET reads boxes only, at 160 px, and packs the boxes the metric
    evaluates against; the Lite0 backbone is the shared one."""
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/experiments/'
        'faster-rcnn_efficientnet-lite0_mslora_neu-det.py'))
    for split in ('train', 'val'):
        pipeline = cfg[f'{split}_dataloader'].dataset.pipeline
        resize, = [t for t in pipeline if t['type'] == 'Resize']
        assert resize['scale'] == (160, 160)
        load, = [t for t in pipeline if t['type'] == 'LoadAnnotations']
        assert load['with_bbox'] and not load.get('with_mask', False)
    assert 'instances' in cfg.val_dataloader.dataset.pipeline[-1]['meta_keys']
    assert 'instances' not in cfg.train_dataloader.dataset.pipeline[-1].get(
        'meta_keys', ())
    assert cfg.model.backbone == dict(cfg.lite0_mslora)
    assert cfg.model.neck.in_channels == [24, 40, 112, 320]


@pytest.mark.parametrize('path', [
    'configs/efficientnet_lite/mask_rcnn_efficientnet-lite0_mslora_1x.py',
    'configs/experiments/efficientnet-lite0_mslora_eurosat5.py'])
def test_lite0_adapters_skip_block_0_and_keep_to_the_channels(path):
    """The Lite0 default (docs/benchmarks.md, "Small backbones"), in the
    detector and the classifier alike: blocks 1-15 (block 0, stage 0,
    stays pretrained), D = min(32, C), no recompute."""
    from mslora_mm.models.peft_lora import build_without_weights
    cfg = Config.fromfile(osp.join(ROOT, path))
    backbone = build_without_weights(cfg.model.backbone)
    adapters = list(adapter_modules(backbone))
    assert [n for n, _ in adapters] == [
        f'_blocks.{i}.mslora' for i in range(1, 16)]
    assert [a.in_channels for _, a in adapters][:3] == [24, 24, 40]
    assert [a.rank for _, a in adapters] == [24, 24] + [32] * 13
    assert not any(a.with_cp for _, a in adapters)


#: the shipped configs no end-to-end test trains: each takes one training
#: step here (forward, loss, backward) at a tiny input
STEPPED = [p for p in CONFIGS if p.startswith((
    'configs/retinanet/', 'configs/swin/', 'configs/examples/',
    'configs/ablations/', 'configs/segmentation/',
    'configs/mask_rcnn_r50-rsb')) or '_full-ft_' in p
    or '_linear-probe_' in p]


def _no_weights(cfg) -> None:
    """No checkpoint is read (none downloads here)."""
    cfg.pop('pretrained', None)
    backbone = cfg.backbone
    while isinstance(backbone, dict):
        backbone.pop('init_cfg', None)
        backbone = backbone.get('backbone')


def _batch(model, scope: str, size: int = 64) -> dict:
    import torch
    torch.manual_seed(0)
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        classes = getattr(getattr(model, 'bbox_head', None), 'num_classes',
                          None) or model.roi_head.bbox_head.num_classes
        return demo_mm_inputs(2, [[3, size, size]] * 2, num_items=[2, 2],
                              num_classes=classes,
                              with_mask=hasattr(model, 'roi_head') and
                              model.roi_head.with_mask)
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(2):
            s = SegDataSample(metainfo=dict(img_shape=(size, size),
                                            ori_shape=(size, size),
                                            pad_shape=(size, size)))
            s.gt_sem_seg = PixelData(data=torch.randint(
                0, model.decode_head.num_classes, (1, size, size)))
            samples.append(s)
        return dict(inputs=[torch.randint(0, 255, (3, size, size),
                                          dtype=torch.uint8)] * 2,
                    data_samples=samples)
    from mmpretrain.structures import DataSample
    return dict(inputs=[torch.randint(0, 255, (3, size, size),
                                      dtype=torch.uint8)] * 2,
                data_samples=[DataSample().set_gt_label(i) for i in (0, 1)])


@pytest.mark.slow  # Swin-L and UperNet steps: minutes in all on 2 cores
@pytest.mark.parametrize('path', STEPPED)
def test_config_takes_a_training_step(path):
    """One forward + loss + backward: every parameter the optimizer trains
    in the backbone gets a gradient (adapters a non-zero one), and no frozen
    one does."""
    import torch
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope, init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, path))
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    _no_weights(cfg.model)
    if scope == 'mmseg':
        cfg.model.data_preprocessor.size = (64, 64)
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        for _, adapter in adapter_modules(model.backbone):
            # as after some training: with Up at zero only Up has gradients
            torch.nn.init.normal_(adapter.up.weight, std=0.02)
        model.train()
        # mmpretrain's Swin needs its 7x7 windows at stride 32
        size = 224 if scope == 'mmpretrain' and 'swin' in path else 64
        data = model.data_preprocessor(_batch(model, scope, size), True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    # optimised and (after train(): mmpretrain's frozen_stages) trainable
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    trained = {n for n in optimised_names(model, optim)
               if n.startswith('backbone.') and n in trainable}
    for name, p in model.named_parameters():
        if not name.startswith('backbone.'):
            continue
        if name in trained:  # (drop path may zero a block's gradient)
            assert p.grad is not None, name
            if '.mslora.' in name:
                assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert ('linear-probe' in path or 'frozen' in path) == (not trained)
