"""The shipped classification and ConvNeXt configs through tools/train.py
and tools/test.py, on real images; the R-50 demo config through
tools/demo.py."""
import os.path as osp

import mmcv
import pytest
import torch

from helpers import ROOT, minicoco_config, run_tool, shared_data

pytestmark = pytest.mark.slow  # minutes each


HYMENOPTERA = osp.join(osp.dirname(ROOT), 'shared', 'data', 'hymenoptera')
CLASSIFICATION = {  # backbone arguments for random weights and 64 px inputs
    # live residual branches, as pretrained ones (mmdet zeroes them)
    'resnet50': dict(zero_init_residual=False),
    'swin-b': dict(img_size=64, pad_small_map=True),
    'vit-b16': dict(img_size=64),
}


@pytest.mark.parametrize('name', list(CLASSIFICATION))
def test_classification_config_trains_and_tests(name, tmp_path):
    """The Food-101 MSLoRA configs through tools/train.py and tools/test.py
    on the real ants/bees folders (64 px, 2 iterations): adapters train,
    top-1 is printed."""
    from helpers import hymenoptera_config
    shared_data('hymenoptera')
    cfg = hymenoptera_config(
        tmp_path, f'configs/classification/{name}_mslora_food101.py',
        HYMENOPTERA, backbone=CLASSIFICATION[name])
    work = tmp_path / 'work'
    out = run_tool('tools/train.py', cfg, '--work-dir', str(work))
    assert 'accuracy/top1' in out
    ckpt = torch.load(work / 'iter_2.pth', weights_only=True)['state_dict']
    ups = [v for k, v in ckpt.items() if k.endswith('mslora.up.weight')]
    assert ups and any(torch.count_nonzero(v) for v in ups)
    out = run_tool('tools/test.py', cfg, str(work / 'iter_2.pth'),
                   '--work-dir', str(tmp_path / 'test'))
    assert 'accuracy/top1:' in out and 'accuracy/top2:' in out


def test_convnext_config_trains(tmp_path, minicoco):
    """Mask R-CNN ConvNeXt-T + MSLoRA (mmpretrain backbone, declared sites):
    the shipped config's backbone trains two iterations on minicoco through
    tools/train.py, its adapters move."""
    from mmengine.config import Config
    shipped = Config.fromfile(
        osp.join(ROOT, 'configs/convnext/mask_rcnn_convnext-t_mslora_1x.py'))
    backbone = shipped.model.backbone.to_dict()
    backbone['backbone'].pop('init_cfg')  # no download; random weights
    cfg = minicoco_config(tmp_path, minicoco, extra=(
        f"model = dict(backbone=dict(_delete_=True, **{backbone!r}), "
        f"neck=dict(in_channels={list(shipped.model.neck.in_channels)}))\n"
        f"custom_imports = {shipped.custom_imports.to_dict()!r}\n"))
    work = tmp_path / 'work'
    run_tool('tools/train.py', cfg, '--work-dir', str(work))
    ckpt = torch.load(work / 'iter_2.pth', weights_only=True)['state_dict']
    ups = {k: v for k, v in ckpt.items() if k.endswith('mslora.up.weight')}
    assert len(ups) == 18 and all(torch.count_nonzero(v) for v in ups.values())


def test_demo_with_the_r50_config(tmp_path):
    """``tools/demo.py --config configs/demo/mask_rcnn_r50_mslora_demo.py``
    as the README gives it (the randomly initialised R-50, its statistics
    calibrated), cut to 4 epochs without the baseline: the trained column
    clearly above the untrained model, and the pictures. Measured here
    (seed 0): box / mask AP50 0.006 / 0.000 untrained, after 4 epochs
    0.336 / 0.368 at one thread (as under the parallel tests) and 0.166 /
    0.216 at two. Random frozen features make the start of learning
    vary: after 3 epochs 0.122 / 0.166 and 0.008 / 0.015, after 2 epochs
    0.000 / 0.000 and 0.052 / 0.042, too early to test."""
    out = run_tool(
        osp.join(ROOT, 'tools/demo.py'), '--config',
        osp.join(ROOT, 'configs/demo/mask_rcnn_r50_mslora_demo.py'),
        '--work-dir', str(tmp_path / 'work'), '--no-baseline',
        '--cfg-options', 'train_cfg.max_epochs=4', cwd=str(tmp_path),
        timeout=900)
    assert 'randomly initialised' in out
    assert 'ResNet (frozen, random)' in out
    header = next(l for l in out.splitlines() if l.startswith('metric'))
    assert header.split() == ['metric', 'untrained', 'MSLoRA']
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]]
            for line in out.splitlines() if line.startswith('coco/')
            and len(line.split()) == 3}
    assert set(rows) == {'coco/bbox_mAP', 'coco/bbox_mAP_50',
                         'coco/segm_mAP', 'coco/segm_mAP_50'}
    for key in ('coco/bbox_mAP_50', 'coco/segm_mAP_50'):
        untrained, mslora = rows[key]
        assert mslora > untrained + 0.05, (key, rows)
    pictures = [l.strip() for l in out.splitlines()
                if l.strip().endswith('.png')]
    assert len(pictures) == 5
    for path in pictures:
        image = mmcv.imread(path)
        assert image is not None and image.std() > 5, path
