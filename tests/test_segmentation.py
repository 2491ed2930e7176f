"""mmsegmentation: the presets and MSLoRABackbone in mmseg's scope, the
shipped segmentation configs, adapter files on an EncoderDecoder, the
checked label folders and a CamVid run through the tools."""
import copy
import glob
import json
import os.path as osp
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from PIL import Image

from helpers import ROOT, run_tool, shared_data

from mslora_mm import adapter_modules
from mslora_mm.adapters import apply_adapter_file, save_adapter_file
from mslora_mm.cli import load_config
from mslora_mm.core.mslora import is_adapter_key

SEG_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs/segmentation/*.py'))
                     ) + [osp.join(ROOT, 'configs/experiments/'
                                   'fpn_efficientnet-lite0_mslora_camvid.py')]


@pytest.fixture
def mmseg_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def _no_weights(cfg):
    """The model config without pretrained weights (none download here)."""
    cfg = copy.deepcopy(cfg)
    cfg.pretrained = None
    backbone = cfg.backbone
    while backbone is not None:
        backbone.pop('init_cfg', None)
        backbone = backbone.get('backbone')
    for head in ('decode_head', 'auxiliary_head'):
        if head in cfg and 'SyncBN' in str(cfg[head].get('norm_cfg')):
            cfg[head].norm_cfg = dict(type='BN', requires_grad=True)
    return cfg


def _build(model_cfg):
    from mmseg.registry import MODELS
    return MODELS.build(model_cfg)


@pytest.mark.parametrize('path', SEG_CONFIGS,
                         ids=[osp.basename(p) for p in SEG_CONFIGS])
def test_segmentation_config_builds_with_its_trainable_set(path):
    """Each config builds in mmseg's scope; MSLoRA trains only adapters in
    the backbone, the frozen body nothing, full fine-tuning all of it."""
    cfg = load_config(path)
    assert cfg.default_scope == 'mmseg'
    model = _build(_no_weights(cfg.model))
    trainable = [n for n, p in model.backbone.named_parameters()
                 if p.requires_grad]
    name = osp.basename(path)
    if 'mslora' in name:
        assert trainable and all(is_adapter_key(n) for n in trainable)
        assert type(model.backbone).__name__.startswith('MSLoRA')
    elif 'frozen' in name:
        assert trainable == []
    else:
        assert len(trainable) == len(list(model.backbone.parameters()))
    head = [n for n, p in model.named_parameters()
            if p.requires_grad and n.startswith('decode_head.')]
    assert head


@pytest.mark.parametrize('preset, plain', [
    ('MSLoRAResNetV1c', 'ResNetV1c'), ('MSLoRAResNet', 'ResNet')])
def test_resnet_presets_are_mmseg_classes_and_identity_at_init(
        preset, plain, mmseg_scope):
    """The preset builds mmseg's class (adapters after conv2 of every
    Bottleneck) and, with the plain network's weights, computes what it
    does until the adapters train."""
    from mmseg.models import backbones
    args = dict(depth=50, norm_cfg=dict(type='BN', requires_grad=False),
                norm_eval=True)
    model = _build(dict(type=preset, adapter_cfg=dict(rank=16), **args))
    assert isinstance(model, getattr(backbones, plain))
    sites = [n for n, _ in adapter_modules(model)]
    assert len(sites) == 16 and sites[0].startswith('layer1.0.')
    reference = _build(dict(type=plain, **args))
    torch.manual_seed(0)
    for p in reference.parameters():
        p.data.normal_(0, 0.05)
    missing = model.load_state_dict(reference.state_dict(), strict=False)
    assert all(is_adapter_key(k) for k in missing.missing_keys)
    assert not missing.unexpected_keys
    model.train(), reference.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), reference(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_mslora_backbone_around_mmseg_and_mmpretrain_backbones(mmseg_scope):
    """MSLoRABackbone wraps any backbone of mmseg's or mmpretrain's
    registry in mmseg's scope; Swin's preset is mmseg's Swin."""
    from mmseg.models.backbones import MixVisionTransformer, SwinTransformer
    mit = _build(dict(type='MSLoRABackbone', sites=['layers.*.1.*'],
                      adapter_cfg=dict(rank=8),
                      backbone=dict(type='MixVisionTransformer',
                                    embed_dims=32, num_layers=[1, 1, 1, 1],
                                    num_heads=[1, 2, 5, 8])))
    assert isinstance(mit, MixVisionTransformer)
    assert len(list(adapter_modules(mit))) == 4
    convnext = _build(dict(type='MSLoRABackbone', sites=['stages.3.*'],
                           adapter_cfg=dict(rank=8), backbone=dict(
                               type='mmpretrain.ConvNeXt', arch='atto',
                               out_indices=(0, 1, 2, 3))))
    assert len(list(adapter_modules(convnext))) == 2
    swin = _build(dict(type='MSLoRASwin', embed_dims=32, depths=[1, 1, 1, 1],
                       num_heads=[1, 2, 4, 8], adapter_cfg=dict(rank=8)))
    assert isinstance(swin, SwinTransformer)
    outs = swin(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256]
    assert all(is_adapter_key(n) for n, p in swin.named_parameters()
               if p.requires_grad)


def test_adapter_file_round_trip_on_an_encoder_decoder(tmp_path):
    """Adapters and heads of a trained EncoderDecoder, saved and applied to
    a fresh model of the config: the same state and the same masks."""
    from mmseg.registry import MODELS
    cfg = load_config(SEG_CONFIGS[-1])  # the Lite0 CamVid config
    torch.manual_seed(2)  # a base checkpoint made here (no download)
    plain = MODELS.build(dict(type='EfficientNetLite', out_indices=(7, )))
    base = str(tmp_path / 'lite0.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               plain.state_dict().items()}}, base)
    cfg.model.backbone.backbone.init_cfg.checkpoint = base
    torch.manual_seed(0)
    model = _build(cfg.model)
    model.init_weights()
    key = next(iter(plain.state_dict()))  # the base weights were loaded
    assert torch.equal(model.backbone.state_dict()[key],
                       plain.state_dict()[key])
    for name, p in model.named_parameters():
        if p.requires_grad:  # as if trained: adapters away from identity
            p.data.add_(torch.randn_like(p) * 0.05)
    path = str(tmp_path / 'seg.safetensors')
    save_adapter_file(model, path, cfg=cfg, classes=list(
        cfg.train_dataloader.dataset.metainfo.classes))
    torch.manual_seed(1)
    fresh = _build(cfg.model)
    meta = apply_adapter_file(fresh, path)
    assert meta.classes[0] == 'sky'
    state = fresh.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(1, 3, 96, 128)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'), fresh(x, mode='tensor'))


def _label_folder(root, labels, size=(8, 6)):
    """``images/<name>.jpg`` and ``labels/<name>.png`` (an array each, or
    None: no label file)."""
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    for name, label in labels.items():
        Image.fromarray(np.full((size[1], size[0], 3), 100, np.uint8)).save(
            root / 'images' / f'{name}.jpg')
        if label is not None:
            Image.fromarray(np.asarray(label, np.uint8)).save(
                root / 'labels' / f'{name}.png')
    return str(root)


def _dataset(root):
    from mmseg.registry import DATASETS
    return DATASETS.build(dict(
        type='CheckedSegDataset', data_root=root,
        data_prefix=dict(img_path='images', seg_map_path='labels'),
        img_suffix='.jpg', seg_map_suffix='.png',
        metainfo=dict(classes=('road', 'car', 'sky'),
                      palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]]),
        ignore_index=11,
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')]))


def test_checked_labels_pass_and_each_bad_case_names_the_file(
        tmp_path, mmseg_scope):
    good = np.zeros((6, 8), np.uint8)
    good[0, :3] = [1, 2, 11]  # classes and the ignored value
    ds = _dataset(_label_folder(tmp_path / 'ok', {'a': good}))
    sample = ds[0]['data_samples'].gt_sem_seg.data
    assert sorted(sample.unique().tolist()) == [0, 1, 2, 11]

    with pytest.raises(FileNotFoundError,
                       match=r'1 of 2 images have no label file, e\.g\. '
                       r'.*b\.jpg needs .*labels/b\.png'):
        _dataset(_label_folder(tmp_path / 'miss', {'a': good, 'b': None}))

    bad = good.copy()
    bad[2, 2] = 7
    ds = _dataset(_label_folder(tmp_path / 'value', {'c': bad}))
    with pytest.raises(ValueError, match=r'c\.png: label value\(s\) \[7\] '
                       r'are neither a class \(0\.\.2: road, car, sky\) nor '
                       r'the ignored value 11'):
        ds[0]
    ds = _dataset(_label_folder(tmp_path / 'size', {'d': good[:, :6]}))
    with pytest.raises(ValueError, match=r'd\.png: the label map is 6x6 '
                       r'\(w x h\) but its image .*d\.jpg is 8x6'):
        ds[0]
    (tmp_path / 'empty' / 'images').mkdir(parents=True)
    with pytest.raises(ValueError, match="no image ending in '.jpg'"):
        _dataset(str(tmp_path / 'empty'))


CAMVID = osp.join(ROOT, 'configs/experiments/'
                  'fpn_efficientnet-lite0_mslora_camvid.py')


def test_camvid_dataset_ignores_label_11_and_its_crop_does_not_count_it(
        tmp_path):
    """The CamVid config's dataset holds ignore_index 11 (mmseg's dataset
    kept 255), and its RandomCrop(cat_max_ratio=0.75) does not count the
    unlabelled pixels as a class. The label map (10 x 100): rows 0-6
    unlabelled (11), rows 7-9 class 0 left of column 50, class 1 right of
    it. Counting 11 as a class, every 50-wide crop passes the check at the
    first try (11 is 70% of it); ignoring it, a crop passes only while
    neither real class covers 75% of the labelled pixels, i.e. offsets
    13..37, and ten tries at random offsets find one but for 1 seed in 800."""
    from mmengine.registry import DATASETS
    label = np.full((10, 100), 11, np.uint8)
    label[7:, :50], label[7:, 50:] = 0, 1
    root = tmp_path / 'camvid'
    for sub in ('images/train', 'annotations/train'):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.full((10, 100, 3), 100, np.uint8)).save(
        root / 'images/train/f.jpg')
    Image.fromarray(label).save(root / 'annotations/train/f.png')
    cfg = load_config(CAMVID)
    crop = [t for t in cfg.train_pipeline if t['type'] == 'RandomCrop'][0]
    assert crop['cat_max_ratio'] == 0.75
    dataset = dict(cfg.train_dataloader.dataset, data_root=str(root),
                   pipeline=[dict(type='LoadImageFromFile'),
                             dict(type='LoadAnnotations'),
                             dict(crop, crop_size=(10, 50))])
    ds = DATASETS.build(dataset)
    assert ds.ignore_index == 11
    for seed in range(20):
        np.random.seed(seed)
        seg = ds[0]['gt_seg_map']
        assert seg.shape == (10, 50)
        counts = np.bincount(seg[seg != 11], minlength=2)
        assert counts.max() / counts.sum() < 0.75, (seed, counts)


def test_a_crop_or_pad_that_ignores_another_label_is_named(tmp_path,
                                                           mmseg_scope):
    """A RandomCrop with cat_max_ratio < 1, or a transform padding labels,
    left at mmseg's 255 while the dataset ignores 11 stops the build with
    the transform and the fix."""
    root = _label_folder(tmp_path, {'a': np.zeros((6, 8), np.uint8)})
    base = dict(type='CheckedSegDataset', data_root=root,
                data_prefix=dict(img_path='images', seg_map_path='labels'),
                metainfo=dict(classes=('road', 'car')), ignore_index=11)
    load = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    from mmseg.registry import DATASETS
    with pytest.raises(ValueError, match=re.escape(
            "RandomCrop(cat_max_ratio=0.75) ignores label 255 but the "
            "dataset's ignore_index is 11") + '.*give it ignore_index=11'):
        DATASETS.build(dict(base, pipeline=load + [dict(
            type='RandomCrop', crop_size=(4, 4), cat_max_ratio=0.75)]))
    with pytest.raises(ValueError, match=re.escape(
            "RandomRotate pads label maps with 255 but the dataset's "
            "ignore_index is 11: give it seg_pad_val=11")):
        DATASETS.build(dict(base, pipeline=load + [dict(
            type='RandomRotate', prob=1., degree=10)]))
    ds = DATASETS.build(dict(base, pipeline=load + [
        dict(type='RandomCrop', crop_size=(4, 4), cat_max_ratio=0.75,
             ignore_index=11),
        dict(type='RandomRotate', prob=1., degree=10, seg_pad_val=11)]))
    assert ds[0]['gt_seg_map'].shape == (4, 4)


def test_importing_the_package_does_not_import_mmseg():
    code = ('import sys, mslora_mm; '
            'print(sorted(m for m in sys.modules if m.startswith("mmseg")))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


@pytest.mark.slow
def test_camvid_train_test_miou_through_the_tools(tmp_path):
    """tools/train.py and tools/test.py on a CamVid config (4 iterations on
    the real street scenes, 8 test images, no pretrained download): mIoU,
    mAcc and aAcc printed, and equal in both."""
    data = shared_data('camvid')
    config = 'configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py'
    options = ['--cfg-options', 'model.backbone.backbone.init_cfg=None',
               'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
               'train_dataloader.batch_size=2',
               'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False',
               f'train_dataloader.dataset.data_root={data}',
               f'test_dataloader.dataset.data_root={data}',
               f'val_dataloader.dataset.data_root={data}',
               'val_dataloader.dataset.indices=8',
               # validated on the test images: the same numbers as test.py
               'val_dataloader.dataset.data_prefix.img_path=images/test',
               'val_dataloader.dataset.data_prefix.seg_map_path='
               'annotations/test',
               'test_dataloader.dataset.indices=8',
               'val_dataloader.num_workers=0',
               'val_dataloader.persistent_workers=False',
               'test_dataloader.num_workers=0',
               'test_dataloader.persistent_workers=False']
    work = tmp_path / 'work'
    out = run_tool('tools/train.py', config, '--work-dir', str(work),
                   *options, timeout=1200)
    line = [ln for ln in out.splitlines() if 'mIoU:' in ln][-1]
    assert 'mAcc:' in line and 'aAcc:' in line
    shown, dumped = tmp_path / 'shown', tmp_path / 'preds.pkl'
    tested = run_tool('tools/test.py', config, str(work / 'iter_4.pth'),
                      '--work-dir', str(tmp_path / 'test'), '--show-dir',
                      str(shown), '--out', str(dumped), *options,
                      timeout=1200)
    # every test image painted: ground truth beside prediction
    painted = glob.glob(str(shown / '**' / '*.png'), recursive=True)
    assert len(painted) == 8, painted
    assert np.asarray(Image.open(painted[0])).shape == (360, 480 * 2, 3)
    with open(dumped, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 8
    assert predictions[0]['pred_sem_seg']['data'].shape == (1, 360, 480)
    test_line = [ln for ln in tested.splitlines() if 'mIoU:' in ln][-1]
    values = {k: line.split(f'{k}:')[1].split()[0]
              for k in ('aAcc', 'mIoU', 'mAcc')}
    assert values == {k: test_line.split(f'{k}:')[1].split()[0]
                      for k in values}
    assert 0 <= float(values['mIoU']) <= 100
    for name in ('sky', 'bicyclist'):  # mmseg's per-class table
        assert re.search(rf'\|\s*{name}\s*\|', tested), name

    # the trained segmenter on two images: the picture and its JSON
    images = sorted(glob.glob(osp.join(data, 'images', 'test', '*.jpg')))[:2]
    folder = tmp_path / 'images'
    folder.mkdir()
    for path in images:
        (folder / osp.basename(path)).symlink_to(path)
    pictures = tmp_path / 'pictures'
    drawn = run_tool('tools/infer.py', str(folder), config,
                     str(work / 'iter_4.pth'), '--out-dir', str(pictures),
                     '--cfg-options', 'model.backbone.backbone.init_cfg=None')
    assert drawn.count('classes, most pixels class') == 2
    for path in images:
        stem = osp.splitext(osp.basename(path))[0]
        png = np.asarray(Image.open(pictures / f'{stem}.png'))
        assert png.shape[:2] == (360, 480)  # drawn over the image as read
        pixels = json.loads((pictures / f'{stem}.json').read_text())['pixels']
        assert sum(pixels.values()) == 360 * 480
        assert set(map(int, pixels)) <= set(range(11))
    # two runs side by side (the same run twice: identical columns)
    panel = tmp_path / 'panel.png'
    compared = run_tool('tools/analysis/compare_segmentations.py', str(work),
                        str(work), '--labels', 'a', 'b', '--indices', '0',
                        '1', '--out', str(panel))
    lines = [ln for ln in compared.splitlines() if ': a ' in ln]
    assert len(lines) == 2
    for line in lines:
        a, b = re.findall(r'([0-9.]+)%', line)
        assert a == b and 0 <= float(a) <= 100
    assert np.asarray(Image.open(panel)).shape[1] >= 4 * 200  # 4 columns
    maps = run_tool('tools/analysis/reweighting_maps.py', config,
                    str(work / 'iter_4.pth'), images[0], '--out',
                    str(tmp_path / 'maps.png'), '--json',
                    str(tmp_path / 'maps.json'), '--cfg-options',
                    'model.backbone.backbone.init_cfg=None')
    stats = json.loads((tmp_path / 'maps.json').read_text())
    assert stats and all(s['delta_norm_max'] > 0 for s in stats.values()), maps


def test_benchmark_and_count_params_take_a_segmentation_config():
    config = 'configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py'
    out = run_tool('tools/analysis/benchmark.py', config, '--img-size', '64',
                   '--batch', '1', '--iters', '1', '--warmup', '0',
                   '--modes', 'full', 'mslora', timeout=600)
    ratio = float(out.split('mslora_vs_full_backbone_flops:')[1].split()[0])
    assert ratio > 1.0  # the adapters add arithmetic to the same body
    counted = run_tool('tools/analysis/count_params.py', config)
    adapter = float(counted.split('\nadapter ')[1].split()[0].rstrip('M'))
    model = _build(_no_weights(load_config(osp.join(ROOT, config)).model))
    assert adapter == pytest.approx(sum(
        p.numel() for n, p in model.backbone.named_parameters()
        if is_adapter_key(n)) / 1e6, abs=5e-4)


def test_segmentation_panel_colours_the_labels_and_scores_each_run():
    """colorize maps classes to the palette and the ignored label to black;
    pixel_accuracy counts labelled pixels only; the panel has a row per
    image and the image, the ground truth and a column per run."""
    from mslora_mm.visualization import (colorize, draw_segmentation_panel,
                                         pixel_accuracy)
    palette = [[10, 20, 30], [40, 50, 60]]
    gt = np.array([[0, 1], [11, 1]])
    coloured = colorize(gt, palette, ignore_index=11)
    assert coloured.dtype == np.uint8 and coloured.shape == (2, 2, 3)
    assert coloured[0, 0].tolist() == [10, 20, 30]
    assert coloured[0, 1].tolist() == [40, 50, 60]
    assert coloured[1, 0].tolist() == [0, 0, 0]
    pred = np.array([[0, 0], [0, 1]])
    assert pixel_accuracy(pred, gt, 11) == pytest.approx(200 / 3)
    rows = [dict(name=f'im{i}', image=np.zeros((2, 2, 3), np.uint8), gt=gt,
                 preds=dict(a=pred, b=gt)) for i in range(2)]
    fig = draw_segmentation_panel(rows, ['a', 'b'], ['x', 'y'], palette, 11)
    titled = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert titled == ['im0', 'ground truth', 'a (66.7%)', 'b (100.0%)',
                      'im1', 'ground truth', 'a (66.7%)', 'b (100.0%)']
    shown = [ax.get_images()[0].get_array() for ax in fig.axes
             if ax.get_images()]
    np.testing.assert_array_equal(shown[1], coloured)


def test_a_run_dir_without_its_config_or_checkpoint_is_named(tmp_path):
    from mslora_mm.apis import init_run
    (tmp_path / 'cfg.py').write_text('')
    with pytest.raises(FileNotFoundError, match='no last_checkpoint') as e:
        init_run(str(tmp_path))
    assert str(tmp_path) in str(e.value)
