"""tools/analysis/compare_tuning.py: the modes it derives from a config, the
fair protocol (held-out split, lr selection, paired intervals, resume that
cannot reuse a stale run) and end-to-end comparisons whose reports hold the
numbers the runs logged."""
import copy
import importlib.util
import json
import math
import os.path as osp
import re
import subprocess

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS
from PIL import Image

from helpers import ROOT, run_tool, shared_data

from mslora_mm.analysis.comparison import provenance, report, runner, stats
from mslora_mm.analysis.comparison.protocol import (choose_lr, parse_lr_grid,
                                                    selection_config)
from mslora_mm.analysis.comparison.stats import paired_difference
from mslora_mm.analysis.comparison.tuning import matched_mona_rank
from mslora_mm.analysis.comparison.tuning import \
    tuning_mode_config as mode_config
from mslora_mm.analysis.comparison.variants import Variant
from mslora_mm.datasets.holdout import HoldoutSplit, holdout_indices

EUROSAT5_CONFIG = 'configs/experiments/efficientnet-lite0_mslora_eurosat5.py'
OPTIONS = dict(holdout=0.25, holdout_seed=0, lora_rank=None, mona_rank=64)
CODE = dict(fingerprint='f' * 64, commit=None, dirty=None,
            versions=dict(torch='x'), source='recorded by the run')


def test_modes_of_a_preset_and_of_mslora_backbone():
    for config in ('configs/mask_rcnn_r50_mslora_1x.py',
                   'configs/efficientnet_lite/'
                   'mask_rcnn_efficientnet-lite0_mslora_1x.py'):
        cfg = Config.fromfile(osp.join(ROOT, config))
        frozen = mode_config(copy.deepcopy(cfg), 'frozen')
        full = mode_config(copy.deepcopy(cfg), 'full')
        assert frozen.model.backbone.type == 'FrozenBackbone'
        assert full.model.backbone == frozen.model.backbone.backbone
        assert 'MSLoRA' not in full.model.backbone.type
        assert 'adapter_cfg' not in full.model.backbone
        assert full.optim_wrapper.frozen_backbone is False
        assert mode_config(copy.deepcopy(cfg), 'mslora').to_dict() == \
            cfg.to_dict()
    plain = Config.fromfile(osp.join(ROOT, 'configs/baselines/'
                                     'mask_rcnn_r50_full-ft_1x.py'))
    with pytest.raises(ValueError, match='has no MSLoRA adapters'):
        mode_config(plain, 'frozen')


def test_mona_of_another_bottleneck_is_one_more_mode(tmp_path, monkeypatch):
    """``mona-64`` beside ``mona`` (auto-matched): Mona at the same sites
    with bottleneck 64, its body frozen like every adapter mode's; its own
    runs, the other modes' kept ones untouched; a bad name is refused."""
    cfg = Config.fromfile(osp.join(ROOT, CAMVID_CONFIG))
    auto = mode_config(copy.deepcopy(cfg), 'mona', mona_rank=18)
    wide = mode_config(copy.deepcopy(cfg), 'mona-64', mona_rank=18)
    assert auto.model.backbone.adapter_cfg == dict(type='Mona', rank=18)
    assert wide.model.backbone.adapter_cfg == dict(type='Mona', rank=64)
    assert wide.model.backbone.sites == auto.model.backbone.sites
    held = runner.mode_conditions(osp.join(ROOT, CAMVID_CONFIG), None,
                                  {'mona-64': 1e-3, 'full': 1e-3}, OPTIONS)
    assert held['mona-64']['BatchNorm statistics'].startswith('frozen (the')
    started = _setting_tool(monkeypatch, lambda *a: 1.0)
    argv = [osp.join(ROOT, CAMVID_CONFIG), '--modes', 'mslora', 'mona-64',
            '--out', str(tmp_path / 'out'), '--work-dir',
            str(tmp_path / 'work')]
    _tool_module().main(argv)
    assert {m for _, m, *_ in started} == {'mslora', 'mona-64'}
    assert (tmp_path / 'out/final/mona-64/lr0.001_seed0.json').is_file()
    for bad in ('mona-', 'mona-x', 'lora-4'):
        with pytest.raises(SystemExit):
            _tool_module().parse_args([CAMVID_CONFIG, '--modes', bad])


def _image_folder(root, per_class=(6, 9), size=16):
    """``root/<class>/*.png``: a tiny mmpretrain folder dataset, a colour
    per class (learnable), ``per_class`` images of each class."""
    rng = np.random.RandomState(0)
    for c, n in enumerate(per_class):
        (root / f'c{c}').mkdir(parents=True)
        for i in range(n):
            pixels = rng.randint(0, 60, (size, size, 3)) + 150 * c
            Image.fromarray(pixels.astype(np.uint8)).save(
                root / f'c{c}' / f'{i}.png')
    return str(root)


def test_holdout_is_stratified_seeded_disjoint_and_complete(tmp_path):
    labels = [0] * 40 + [1] * 20 + [2] * 10 + [3]
    fit, held = holdout_indices(labels, 0.2, seed=3)
    assert sorted(fit + held) == list(range(len(labels)))
    assert not set(fit) & set(held)
    per_class = [sum(labels[i] == c for i in held) for c in range(4)]
    assert per_class == [8, 4, 2, 0]  # 20% of each class; a lone item fits
    assert holdout_indices(labels, 0.2, seed=3) == (fit, held)
    assert holdout_indices(labels, 0.2, seed=4)[1] != held
    with pytest.raises(ValueError, match=r'in \(0, 1\)'):
        holdout_indices(labels, 1.0, 0)

    # on a real folder dataset, with two pipelines: the same split
    root = _image_folder(tmp_path / 'data')
    ds = dict(type='mmpretrain.CustomDataset', data_root=root,
              pipeline=[dict(type='mmpretrain.LoadImageFromFile')])
    parts = {part: HoldoutSplit(dict(ds), 1 / 3, part, seed=0)
             for part in ('fit', 'holdout')}
    other = HoldoutSplit(dict(ds, pipeline=[]), 1 / 3, 'holdout', seed=0)
    assert parts['holdout'].stratified
    assert len(parts['fit']) == 10 and len(parts['holdout']) == 5
    paths = {p: {d.get_data_info(i)['img_path'] for i in range(len(d))}
             for p, d in parts.items()}
    assert not paths['fit'] & paths['holdout']
    assert len(paths['fit'] | paths['holdout']) == 15
    assert {other.get_data_info(i)['img_path'] for i in range(5)} == \
        paths['holdout']
    held_labels = sorted(int(parts['holdout'].get_data_info(i)['gt_label'])
                         for i in range(5))
    assert held_labels == [0, 0, 1, 1, 1]
    assert parts['fit'][0]['img'].shape == (16, 16, 3)


def test_holdout_of_a_detection_set_is_by_image(tmp_path):
    """A COCO-JSON training set: items without a class label are held out
    by image."""
    images = [dict(id=i, file_name=f'{i}.jpg', width=8, height=8)
              for i in range(10)]
    anns = [dict(id=i, image_id=i, category_id=1, bbox=[0, 0, 4, 4],
                 area=16, iscrowd=0) for i in range(10)]
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(json.dumps(dict(
        images=images, annotations=anns,
        categories=[dict(id=1, name='thing')])))
    ds = dict(type='mmdet.CocoDataset', ann_file=str(ann_file),
              data_prefix=dict(img=str(tmp_path)),
              metainfo=dict(classes=('thing', )), pipeline=[])
    held = HoldoutSplit(ds, 0.3, 'holdout', seed=1)
    fit = HoldoutSplit(ds, 0.3, 'fit', seed=1)
    assert not held.stratified and (len(fit), len(held)) == (7, 3)
    ids = [held.get_data_info(i)['img_id'] for i in range(3)]
    assert not set(ids) & {fit.get_data_info(i)['img_id'] for i in range(7)}


def test_selection_config_never_names_the_val_or_test_data():
    cfg = Config.fromfile(osp.join(ROOT, EUROSAT5_CONFIG))
    selection_config(cfg, 0.2, 0)
    text = json.dumps(cfg.to_dict(), default=str)
    assert "'val'" not in text and '"val"' not in text  # data_prefix='val'
    assert cfg.test_dataloader is None
    assert cfg.train_dataloader.dataset.part == 'fit'
    held = cfg.val_dataloader.dataset
    assert held.part == 'holdout' and held.dataset.data_prefix == 'train'
    assert held.dataset.pipeline[-1]['type'] == 'PackInputs'
    assert not any(t['type'] == 'RandomFlip' for t in held.dataset.pipeline)
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_epochs


def test_the_neu_det_schedule_is_measured_on_the_selection_split():
    """The schedule config trains and scores the very fit / held-out parts
    compare_tuning --holdout 0.2 selects on (never the val images), with
    the comparison's head, and evaluates the held-out part every epoch."""
    shared_data('neu-det')
    from mmengine.registry import DATASETS as ROOT_DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    comparison_config = ('configs/experiments/'
                         'faster-rcnn_efficientnet-lite0_mslora_neu-det.py')
    schedule = Config.fromfile(osp.join(
        ROOT, 'configs/experiments/'
        'faster-rcnn_efficientnet-lite0_frozen_neu-det_schedule.py'))
    selection = runner.run_config(
        osp.join(ROOT, comparison_config), None, 'select', 'frozen', 1e-3,
        1000, dict(OPTIONS, holdout=0.2))

    def ids(cfg, loader):
        dataset = ROOT_DATASETS.build(cfg[loader].dataset)
        return [dataset.get_data_info(i)['img_id']
                for i in range(len(dataset))]

    for loader in ('train_dataloader', 'val_dataloader'):
        assert ids(schedule, loader) == ids(selection, loader), loader
    assert len(ids(schedule, 'val_dataloader')) == 288
    assert schedule.model.roi_head == selection.model.roi_head
    assert schedule.model.backbone == selection.model.backbone  # frozen
    assert schedule.test_dataloader is None
    assert schedule.train_cfg.val_interval == 180 < schedule.train_cfg.max_iters


def test_selection_on_a_coco_config_scores_the_samples_own_boxes():
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mask_rcnn_r50_mslora_1x.py'))
    selection_config(cfg, 0.2, 0)
    assert cfg.val_evaluator.ann_file is None
    pack = cfg.val_dataloader.dataset.dataset.pipeline[-1]
    assert pack['type'] == 'PackDetInputs' and 'instances' in pack[
        'meta_keys'] and 'img_id' in pack['meta_keys']
    assert cfg.val_dataloader.dataset.dataset.ann_file == \
        'annotations/instances_train2017.json'


@DATASETS.register_module(force=True)
class ReadDuringSelection:
    """A val/test dataset that fails the run if anything builds it."""

    def __init__(self, **kwargs):
        raise AssertionError('the test split was read during selection')


def _tiny_config(tmp_path, root, extra: str = '') -> str:
    """A tiny R-18 MSLoRA classifier config training 2 iterations on the
    image folder ``root``, tested on it; ``extra`` appended."""
    config = tmp_path / 'cfg.py'
    config.write_text(f"""
_base_ = '{ROOT}/configs/classification/resnet50_mslora_food101.py'
model = dict(data_preprocessor=dict(num_classes=2),
             head=dict(num_classes=2, topk=(1, ), in_channels=512),
             backbone=dict(backbone=dict(depth=18, init_cfg=None,
                                         zero_init_residual=False),
                           plugin_position=None, sites=['layer4.*'],
                           adapter_cfg=dict(rank=16)))
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
data = dict(type='CustomDataset', data_root='{root}', pipeline=pipeline)
train_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(
    _delete_=True, **data))
val_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(
    _delete_=True, **data))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, by_epoch=False, max_iters=2, val_interval=1)
param_scheduler = []
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2))
""" + extra)
    return str(config)


def test_a_selection_run_trains_and_scores_without_the_test_data(tmp_path):
    """A real (tiny) selection run: trained on the fit part, scored on the
    held-out part; the config's val and test datasets fail if built."""
    root = _image_folder(tmp_path / 'data', per_class=(8, 8))
    config = _tiny_config(tmp_path, root, """
val_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(
    _delete_=True, type='ReadDuringSelection', pipeline=pipeline))
test_dataloader = val_dataloader
""")
    cfg = runner.run_config(config, None, 'select', 'mslora', 1e-3,
                            1000, OPTIONS)
    result = runner.run_one(cfg, str(tmp_path / 'work'))
    assert (result['train_size'], result['eval_size']) == (12, 4)
    assert result['stratified'] is True
    # evaluated once, at the end, on 4 images: a multiple of 25%
    assert result['metrics']['accuracy/top1'] % 25 == 0
    assert 'curve' not in result
    # twice as long, scored every iteration: the curve, the end last
    cfg = runner.run_config(str(config), None, 'select', 'mslora', 1e-3,
                            1000, dict(OPTIONS, curve_every=1),
                            Variant(schedule=2))
    curved = runner.run_one(cfg, str(tmp_path / 'work3'))
    assert [e['iter'] for e in curved['curve']] == [1, 2, 3, 4]
    assert curved['curve'][-1]['metrics'] == curved['metrics']
    cfg = runner.run_config(str(config), None, 'final', 'mslora', 1e-3,
                            0, OPTIONS)
    with pytest.raises(AssertionError, match='read during selection'):
        runner.run_one(cfg, str(tmp_path / 'work2'))


def test_a_final_run_is_also_scored_on_a_second_test_split(tmp_path):
    """``second_test_dataloader``: a final run tests on it after training
    (its own numbers, on its own images); a selection run never reads it;
    a config without one keeps its final config as before (kept runs)."""
    root = _image_folder(tmp_path / 'data', per_class=(8, 8))
    plain = _tiny_config(tmp_path, root)
    before = runner.run_config(plain, None, 'final', 'mslora', 1e-3, 0,
                               OPTIONS)
    assert 'compare_second_test' not in before
    assert before.test_dataloader.dataset.type == 'CustomDataset'
    config = _tiny_config(tmp_path, root, """
second_test_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(
    type='CustomDataset', data_root='%s', pipeline=pipeline, indices=5))
""" % root)
    select = runner.run_config(config, None, 'select', 'mslora', 1e-3, 1000,
                               OPTIONS)
    assert 'second_test_dataloader' not in select
    assert select.test_dataloader is None
    cfg = runner.run_config(config, None, 'final', 'mslora', 1e-3, 0,
                            OPTIONS)
    result = runner.run_one(cfg, str(tmp_path / 'work'))
    assert result['eval_size'] == 16
    assert result['metrics']['accuracy/top1'] % 6.25 == 0  # 16 images
    assert result['second_metrics']['accuracy/top1'] % 20 == 0  # 5 images
    # the report: a column and paired differences of the second split
    runs = [dict(mode=m, lr=1e-3, seed=s, trainable_params=1,
                 backbone_trainable_params=1, train_s=1.0,
                 peak_memory_mb=1.0, metrics={'accuracy/top1': a},
                 second_metrics={'accuracy/top1': b})
            for m, s, a, b in (('mslora', 0, 80, 60), ('mslora', 1, 90, 70),
                               ('frozen', 0, 70, 40), ('frozen', 1, 75, 60))]
    summary = stats.summarise(runs, ['accuracy/top1'])
    second = stats.SECOND + 'accuracy/top1'
    assert summary['mslora']['mean'][second] == 65.0
    assert stats.versus(summary, second)['frozen']['mean'] == -15.0
    table = report.markdown_table(summary, ['accuracy/top1'])
    assert '| mslora | 0.001 | 85.000 ± 7.071 | 65.000 ± 7.071 |' in table


def test_the_headline_metric_comes_first():
    def runs(*keys):
        return [dict(metrics=dict.fromkeys(keys, 1.0))]
    assert runner.choose_metrics(runs('aAcc', 'mIoU', 'mAcc', 'IoU.sky'),
                                  None) == ['mIoU', 'mAcc', 'aAcc']
    assert runner.choose_metrics(runs(
        'coco/bbox_mAP_50', 'coco/bbox_mAP', 'coco/bbox_mAP_s'), None) == [
            'coco/bbox_mAP', 'coco/bbox_mAP_50']
    assert runner.choose_metrics(runs('loss', 'other'), None) == [
        'loss', 'other']
    assert runner.choose_metrics(runs('aAcc', 'mIoU'), ['aAcc']) == [
        'aAcc']


def test_every_evaluators_headline_reaches_the_run_result():
    """What mmseg's IoUMetric, mmpretrain's Accuracy and a plain number
    return (numpy float32, float64, tensors, ints) is kept as floats; tables
    and arrays are left out; a run whose evaluation held no number fails,
    naming what it logged."""
    import torch
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=('a', 'b'))
    label = torch.tensor([[0, 1], [1, 1]])
    logged = metric.compute_metrics([metric.intersect_and_union(
        label, label, 2, 255)])
    logged.update({'accuracy/top1': torch.tensor(87.5), 'step': 3,
                   'per_class': np.array([1.0, 2.0]), 'name': 'x'})
    kept = runner.scalar_metrics(logged)
    assert kept == dict(aAcc=100.0, mIoU=100.0, mAcc=100.0,
                        **{'accuracy/top1': 87.5, 'step': 3.0})
    assert all(type(v) is float for v in kept.values())
    with pytest.raises(RuntimeError, match="cfg.py logged no number.*'name'"):
        runner.scalar_metrics({'name': 'x'}, 'cfg.py')


def test_selection_on_a_segmentation_config_holds_out_images():
    """CamVid: the held-out part is drawn by image from the training
    folder, with the val pipeline (labels at their size) and IoUMetric."""
    data = shared_data('camvid')
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py'))
    selection_config(cfg, 0.2, 0)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.dataset.data_root = data
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmseg'):
        fit = DATASETS.build(cfg.train_dataloader.dataset)
        held = DATASETS.build(cfg.val_dataloader.dataset)
    assert not held.stratified and (len(fit), len(held)) == (294, 73)
    paths = [{d.get_data_info(i)['img_path'] for i in range(len(d))}
             for d in (fit, held)]
    assert not paths[0] & paths[1]
    assert all('/images/train/' in p for p in paths[0] | paths[1])
    assert [type(t).__name__ for t in held.dataset.pipeline.transforms] == [
        'LoadImageFromFile', 'Resize', 'LoadAnnotations', 'CheckSegLabel',
        'PackSegInputs']
    assert cfg.val_evaluator.type == 'IoUMetric'


def test_lr_grids_per_mode_and_for_the_rest():
    modes = ['frozen', 'mslora', 'full']
    assert parse_lr_grid(['3e-4', '1e-3', 'full=1e-5,3e-5,1e-4',
                          'mslora=1e-3,3e-4'], modes) == dict(
        frozen=[3e-4, 1e-3], mslora=[3e-4, 1e-3], full=[1e-5, 3e-5, 1e-4])
    assert parse_lr_grid(['full=1e-5'], modes) == dict(
        frozen=None, mslora=None, full=[1e-5])
    assert parse_lr_grid(None, modes) == dict.fromkeys(modes)
    for bad, message in (['lora=1e-3', 'not one of the modes'],
                         ['full=fast', 'must be numbers'],
                         ['-1e-3', 'positive'], ['full=', 'positive']):
        with pytest.raises(ValueError, match=message):
            parse_lr_grid([bad], modes)


def test_the_best_mean_chooses_and_a_tie_goes_to_the_smaller_lr():
    assert choose_lr({1e-3: [80.0, 84.0], 3e-4: [83.0, 83.0],
                      1e-4: [70.0, 90.0]}) == 3e-4
    assert choose_lr({1e-3: [82.0], 3e-4: [82.0], 1e-2: [82.0]}) == 3e-4
    assert choose_lr({1e-3: [50.0], 3e-4: [49.9]}) == 1e-3


def test_paired_interval_matches_a_hand_computation():
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 (tables)
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302653 / math.sqrt(3)
    assert d['n'] == 3 and d['mean'] == pytest.approx(2.0)
    assert d['std'] == pytest.approx(1.0)
    assert (d['low'], d['high']) == pytest.approx((2 - half, 2 + half),
                                                  abs=1e-5)
    assert d['word'] == 'not resolved'
    # diffs -1.0, -1.2, -0.8, -1.1, -0.9: sd 0.158, t(0.975, 4) = 2.776445
    d = paired_difference([0.0] * 5, [1.0, 1.2, 0.8, 1.1, 0.9])
    half = 2.776445 * math.sqrt(0.025) / math.sqrt(5)
    assert (d['low'], d['high']) == pytest.approx((-1 - half, -1 + half),
                                                  abs=1e-5)
    assert d['word'] == 'behind'
    assert paired_difference([2.0, 2.5], [1.0, 1.4])['word'] == 'ahead'
    assert paired_difference([3.0], [1.0])['word'] == 'not resolved'
    with pytest.raises(ValueError, match='same seeds'):
        paired_difference([1.0, 2.0], [1.0])


def test_versus_pairs_by_seed():
    summary = {m: dict(seeds=[0, 1, 2], values={'acc': v}) for m, v in (
        ('mslora', [90.0, 91.0, 92.0]), ('lora', [80.0, 82.0, 81.0]))}
    summary['full'] = dict(seeds=[2, 0], values={'acc': [92.5, 90.5]})
    diffs = stats.versus(summary, 'acc')
    assert diffs['lora']['mean'] == pytest.approx(-10.0)
    assert diffs['lora']['word'] == 'behind'
    assert diffs['full']['n'] == 2
    assert diffs['full']['mean'] == pytest.approx(0.5)
    assert diffs['full']['std'] == pytest.approx(0.0)


def _fake_tool(monkeypatch):
    started = []

    def fake_run(cmd, stdout, **kwargs):
        started.append(cmd)
        stdout.write(runner.RESULT + json.dumps(dict(metrics={})) + '\n')
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, 'run', fake_run)
    return started


def test_finished_runs_are_kept_and_rerun_on_request(tmp_path, monkeypatch):
    """A rerun keeps a finished run of the same signature without starting
    a process; another signature or ``rerun`` runs it again. The result
    lands in ``out``, the log in the work folder."""
    started = _fake_tool(monkeypatch)
    config = osp.join(ROOT, EUROSAT5_CONFIG)
    sig = runner.signature(runner.run_config(
        config, None, 'final', 'frozen', 1e-3, 0, OPTIONS), OPTIONS)
    out, work = str(tmp_path / 'out'), str(tmp_path / 'work')
    args = (['tool'], out, work, 'final', 'frozen', 1e-3, 0)
    first = runner.launch(*args, sig, CODE)
    assert first['lr'] == 1e-3 and len(started) == 1
    saved = tmp_path / 'out' / 'final' / 'frozen' / 'lr0.001_seed0.json'
    assert json.loads(saved.read_text())['signature'] == sig
    assert (tmp_path / 'work/final/frozen/lr0.001_seed0/run.log').is_file()
    assert runner.launch(*args, sig, CODE) == first and len(started) == 1
    other = runner.signature(runner.run_config(
        config, dict(train_cfg=dict(max_epochs=2)), 'final', 'frozen', 1e-3,
        0, OPTIONS), OPTIONS)
    runner.launch(*args, other, CODE)
    runner.launch(*args, other, CODE, rerun=True)
    assert len(started) == 3
    assert started[-1][-5:] == ['--run', 'final', 'frozen', '0.001', '0']


def test_a_run_is_redone_after_its_base_config_changed(tmp_path,
                                                       monkeypatch):
    """The top-level config's text is unchanged; its base changed: the kept
    run is stale and runs again."""
    started = _fake_tool(monkeypatch)
    base = tmp_path / 'base.py'
    base.write_text(f"_base_ = '{ROOT}/{EUROSAT5_CONFIG}'\n")
    top = tmp_path / 'top.py'
    top.write_text("_base_ = './base.py'\n")

    def launch():
        cfg = runner.run_config(str(top), None, 'final', 'mslora', 1e-3,
                                0, OPTIONS)
        runner.launch(['tool'], str(tmp_path / 'out'),
                      str(tmp_path / 'work'), 'final', 'mslora', 1e-3, 0,
                      runner.signature(cfg, OPTIONS), CODE)

    launch()
    launch()
    assert len(started) == 1
    base.write_text(base.read_text() + 'model = dict(backbone=dict('
                    'adapter_cfg=dict(rank=16)))\n')
    launch()
    assert len(started) == 2
    sig = runner.signature(Config.fromfile(str(top)), OPTIONS)
    assert sig != runner.signature(Config.fromfile(str(top)),
                                   dict(OPTIONS, holdout=0.3))


def _tool_module():
    spec = importlib.util.spec_from_file_location(
        'compare_tuning_tool',
        osp.join(ROOT, 'tools/analysis/compare_tuning.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_select_only_chooses_on_the_held_out_part_and_stops(tmp_path,
                                                            monkeypatch):
    """``--select-only``: every mode selects (a one-value grid too), no
    final run starts, and the selection files name the chosen lr."""
    started = []

    def fake_run(cmd, stdout, **kwargs):
        started.append(cmd[-4:])
        mode, lr = cmd[-3], float(cmd[-2])
        top1 = {'frozen': 90.0, 'mslora': 95.0 - 1e3 * abs(lr - 1e-3)}[mode]
        stdout.write(runner.RESULT + json.dumps(dict(
            metrics={'accuracy/top1': top1}, train_size=750, eval_size=250,
            stratified=True)) + '\n')
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, 'run', fake_run)
    out = tmp_path / 'out'
    _tool_module().main([
        osp.join(ROOT, EUROSAT5_CONFIG), '--modes', 'frozen', 'mslora',
        '--holdout', '0.25', '--lr-grid', '3e-4', '1e-3', '3e-3',
        'frozen=1e-2', '--select-only', '--out', str(out),
        '--work-dir', str(tmp_path / 'work')])
    assert sorted(started) == sorted(
        [['select', 'frozen', '0.01', '1000']] +
        [['select', 'mslora', lr, '1000'] for lr in ('0.0003', '0.001',
                                                    '0.003')])
    saved = json.loads((out / 'selection.json').read_text())
    assert saved['chosen'] == {'frozen': 1e-2, 'mslora': 1e-3}
    assert saved['sizes'] == dict(fit=750, holdout=250, holdout_by='by class',
                                  shared_images=None)
    markdown = (out / 'selection.md').read_text()
    assert '| mslora | 94.300 | **95.000** | 93.000 |  |' in markdown
    assert (out / 'selection.png').stat().st_size > 0
    assert not (out / 'results.md').exists() and not (out / 'final').exists()


def test_select_only_without_a_holdout_is_refused():
    with pytest.raises(SystemExit):
        _tool_module().parse_args([EUROSAT5_CONFIG, '--select-only'])


def test_mona_auto_matches_mslora_trainable_backbone_parameters():
    cfg = Config.fromfile(osp.join(ROOT, EUROSAT5_CONFIG))
    rank, count, target = matched_mona_rank(cfg.model.backbone.to_dict())
    assert abs(count / target - 1) <= 0.2
    assert 1 <= rank < 64  # the published 64 is 3.7x MSLoRA's budget
    wider = matched_mona_rank(dict(cfg.model.backbone.to_dict(),
                                   adapter_cfg=dict(rank=32, groups=4,
                                                    kernel_sizes=(3, 5, 7))))
    assert wider[0] >= rank


@pytest.mark.slow
def test_fair_protocol_from_the_cli_on_a_small_eurosat5_subset(
        tmp_path, monkeypatch, capsys):
    """2 modes x 2 learning rates on the held-out part, 2 final seeds on
    the test split: the report holds the runs' numbers; with the kept runs'
    scores replaced by hand tables, the tool chooses the best held-out lr
    (a tie: the smaller) and reports the seeds' mean and std worked out by
    hand; rerunning keeps every run."""
    data = shared_data('eurosat5')
    out, work = tmp_path / 'out', tmp_path / 'work'
    command = [
        'tools/analysis/compare_tuning.py',
        'configs/experiments/efficientnet-lite0_mslora_eurosat5-20pc.py',
        '--modes', 'frozen', 'mslora', '--seeds', '2', '--holdout', '0.25',
        '--lr-grid', '1e-3', 'mslora=3e-3,1e-2', '--out', str(out),
        '--work-dir', str(work), '--cfg-options',
        f'train_dataloader.dataset.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        'train_dataloader.dataset.per_class=4', 'train_cfg.max_epochs=1',
        'train_dataloader.batch_size=5', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'val_dataloader.dataset.indices=20',
        f'test_dataloader.dataset.data_root={data}',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        'test_dataloader.dataset.indices=20',
        'model.backbone.backbone.init_cfg=None']
    run_tool(*command, timeout=1500)
    results = json.loads((out / 'results.json').read_text())
    p = results['protocol']
    assert p['sizes'] == dict(train=20, fit=15, holdout=5, test=20,
                              holdout_by='by class', shared_images=0)
    sel = results['selection_runs']
    assert {(r['mode'], r['lr'], r['seed']) for r in sel} == {
        ('mslora', 3e-3, 1000), ('mslora', 1e-2, 1000)}
    first = p['chosen']['mslora']
    assert p['chosen']['frozen'] == 1e-3 and first in (3e-3, 1e-2)
    runs = results['runs']
    assert [(r['mode'], r['seed']) for r in runs] == [
        ('frozen', 0), ('mslora', 0), ('frozen', 1), ('mslora', 1)]
    for mode in ('frozen', 'mslora'):
        values = [r['metrics']['accuracy/top1'] for r in runs
                  if r['mode'] == mode]
        assert results['summary'][mode]['values']['accuracy/top1'] == values
        assert all(v % 5 == 0 for v in values)  # 20 test images

    def score(run: str, top1: float) -> None:
        """The kept run ``<out>/<run>.json`` now scored ``top1``."""
        path = out / f'{run}.json'
        kept = json.loads(path.read_text())
        kept['result']['metrics']['accuracy/top1'] = top1
        path.write_text(json.dumps(kept))

    # the tool again, in this process (every run kept: none starts)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(runner.subprocess, 'run', None)

    def chosen(held_out: dict) -> str:
        """What a dry run (every selection run kept) chooses when mslora's
        held-out scores are ``held_out`` (lr -> score)."""
        for lr, top1 in held_out.items():
            score(f'select/mslora/lr{lr:g}_seed1000', top1)
        _tool_module().main(command[1:] + ['--dry-run'])
        return re.search(r'chosen on the held-out part: (.*)',
                         capsys.readouterr().out).group(1)

    frozen = 'frozen lr 0.001 (as configured), '
    assert chosen({3e-3: 60.0, 1e-2: 80.0}) == \
        frozen + 'mslora lr 0.01 (as configured)'
    assert chosen({3e-3: 80.0, 1e-2: 60.0}) == \
        frozen + 'mslora lr 0.003 (as configured)'
    assert chosen({3e-3: 70.0, 1e-2: 70.0}) == \
        frozen + 'mslora lr 0.003 (as configured)'
    # the final runs (made at the first choice, kept again) scored by hand
    other = 1e-2 if first == 3e-3 else 3e-3
    assert chosen({first: 80.0, other: 60.0}) == \
        frozen + f'mslora lr {first:g} (as configured)'
    for run, top1 in {'frozen/lr0.001_seed0': 70.0,
                      'frozen/lr0.001_seed1': 75.0,
                      f'mslora/lr{first:g}_seed0': 80.0,
                      f'mslora/lr{first:g}_seed1': 90.0}.items():
        score(f'final/{run}', top1)
    _tool_module().main(command[1:])
    assert capsys.readouterr().out.count('finished before, kept') == 6
    results = json.loads((out / 'results.json').read_text())
    assert results['protocol']['chosen'] == dict(frozen=1e-3, mslora=first)
    summary = {m: (s['mean']['accuracy/top1'], s['std']['accuracy/top1'])
               for m, s in results['summary'].items()}
    # sample std: sqrt((2.5^2 + 2.5^2) / 1) and sqrt((5^2 + 5^2) / 1)
    assert summary == {'frozen': pytest.approx((72.5, 3.5355339059327378)),
                       'mslora': pytest.approx((85.0, 7.0710678118654755))}
    diff = results['versus_mslora']['frozen']  # 70 - 80, 75 - 90
    assert (diff['mean'], diff['std'], diff['n']) == pytest.approx(
        (-12.5, 3.5355339059327378, 2))
    md = (out / 'results.md').read_text()
    for text in ('fit 15 / held out 5', 'test split 20', '## Against MSLoRA',
                 diff['word'], '## Selection', 'Held equal across modes',
                 "- dropout / drop path in the body: `{'drop_path_rate': "
                 "0.2}, active in training`",
                 '- BatchNorm statistics: `frozen (the pretrained running '
                 'statistics)`'):
        assert text in md, text
    for png in ('selection.png', 'budget.png'):
        import matplotlib.image as mpimg
        image = mpimg.imread(str(out / png))
        assert image.shape[0] > 200 and image.std() > 0.01
    assert not list(out.rglob('*.pth')) and list(work.rglob('*.pth'))


@pytest.mark.slow
def test_five_modes_with_selection_on_a_voc_xml_detection_subset(tmp_path):
    """NEU-DET (VOC XML, CocoMetric on the samples' own boxes): the five
    modes, MSLoRA's lr chosen on held-out training images, then one final
    seed each on the val images; every mode counted and evaluated."""
    shared_data('neu-det')
    ids = tmp_path / 'ids.txt'
    ids.write_text('crazing_1\ninclusion_1\npatches_1\nscratches_1\n')
    out = tmp_path / 'out'
    run_tool('tools/analysis/compare_tuning.py',
             'configs/experiments/faster-rcnn_efficientnet-lite0_mslora_neu-det.py',
             '--holdout', '0.5', '--lr-grid', 'mslora=1e-3,3e-3',
             '--mona-dim', 'auto', '--out', str(out), '--work-dir',
             str(tmp_path / 'work'), '--cfg-options',
             f'train_dataloader.dataset.ann_file={ids}',
             f'test_dataloader.dataset.ann_file={ids}',
             'train_dataloader.batch_size=2', 'max_iters=2',
             'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
             'train_dataloader.num_workers=0',
             'train_dataloader.persistent_workers=False',
             'test_dataloader.num_workers=0',
             'test_dataloader.persistent_workers=False',
             'val_dataloader.num_workers=0',
             'val_dataloader.persistent_workers=False',
             'model.backbone.backbone.init_cfg=None', timeout=1100)
    results = json.loads((out / 'results.json').read_text())
    assert results['protocol']['sizes'] == dict(
        train=4, fit=2, holdout=2, test=4, holdout_by='by image',
        shared_images=0)
    assert [r['mode'] for r in results['runs']] == [
        'frozen', 'mslora', 'lora', 'mona', 'full']
    assert results['metrics'][:2] == ['coco/bbox_mAP', 'coco/bbox_mAP_50']
    assert {r['lr'] for r in results['selection_runs']} == {1e-3, 3e-3}
    summary = results['summary']
    assert summary['frozen']['backbone_trainable_params'] == 0
    mslora = summary['mslora']['backbone_trainable_params']
    for peer in ('lora', 'mona'):  # matched budgets
        assert abs(summary[peer]['backbone_trainable_params'] / mslora - 1) \
            <= 0.2, peer
    assert summary['full']['backbone_trainable_params'] > 10 * mslora
    assert results['protocol']['lora_rank'] is None


# --- held-out splits that cannot leak (issue 45.2) ---------------------------

def _documented_commands():
    """The compare_tuning.py commands of docs/results.md (continued lines
    joined) that write a committed report, as argument lists (not the
    template of the Lite0 variants)."""
    import re
    import shlex
    text = re.sub(r'\\\n\s*', ' ', open(osp.join(ROOT, 'docs/results.md'))
                  .read())
    return [shlex.split(line.split('compare_tuning.py', 1)[1])
            for line in text.splitlines()
            if line.startswith('python tools/analysis/compare_tuning.py')
            and '--out docs/results/' in line and 'VARIANT' not in line]


def test_a_group_rule_reaches_the_split_and_only_the_selection():
    cfg = runner.run_config(osp.join(ROOT, EUROSAT5_CONFIG), None,
                            'select', 'mslora', 1e-3, 1000,
                            dict(OPTIONS, holdout_groups='^(\\w+?)_'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.groups == '^(\\w+?)_'
    plain = runner.run_config(osp.join(ROOT, EUROSAT5_CONFIG), None,
                              'select', 'mslora', 1e-3, 1000, OPTIONS)
    assert 'groups' not in plain.train_dataloader.dataset  # runs kept
    with pytest.raises(SystemExit):
        _tool_module().parse_args([EUROSAT5_CONFIG, '--holdout-groups', 'x'])


def test_camvid_sequences_are_the_documented_groups():
    """The documented CamVid command's --holdout-groups names the video of
    every training frame (0001TP, 0006R0, 0016E5): whole videos are held
    out, no frame of a held-out video is fitted on."""
    data = shared_data('camvid')
    camvid = [c for c in _documented_commands() if 'camvid' in c[0]]
    assert len(camvid) == 1
    rule = camvid[0][camvid[0].index('--holdout-groups') + 1]
    cfg = Config.fromfile(osp.join(ROOT, camvid[0][0]))
    selection_config(cfg, 0.2, 0, rule)
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS as SEG_DATASETS
    parts = []
    with DefaultScope.overwrite_default_scope('mmseg'):
        for loader in (cfg.train_dataloader, cfg.val_dataloader):
            loader.dataset.dataset.data_root = data
            parts.append(SEG_DATASETS.build(loader.dataset))
    videos = [{osp.basename(d.get_data_info(i)['img_path'])[:6]
               for i in range(len(d))} for d in parts]
    assert videos[0] | videos[1] == {'0001TP', '0006R0', '0016E5'}
    assert not videos[0] & videos[1]
    assert len(parts[0]) + len(parts[1]) == 367
    assert parts[1].shared_images == 0 and '1 of 3 groups' in parts[1].drawn


# --- the grid rule (issue 45.4) ----------------------------------------------

def test_next_lr_walks_the_1_3_10_ladder():
    from mslora_mm.analysis.comparison.protocol import grid_extension, next_lr
    assert [next_lr(x, True) for x in (1e-3, 3e-3, 3e-5, 2e-3)] == [
        3e-3, 1e-2, 1e-4, 6e-3]
    assert [next_lr(x, False) for x in (1e-3, 3e-3, 1e-1)] == [3e-4, 1e-3,
                                                               3e-2]
    assert grid_extension({1e-3: 90.0, 3e-3: 95.0, 1e-2: 95.0}) == [3e-2]
    assert grid_extension({1e-3: 96.0, 3e-3: 95.0, 1e-2: 94.0}) == [3e-4]
    assert grid_extension({1e-3: 90.0, 3e-3: 95.0, 1e-2: 94.0}) == []
    assert grid_extension({1e-3: 5.0, 3e-3: 4.0, 1e-2: 5.0}) == [3e-4, 3e-2]


def _scored_tool(monkeypatch, score):
    """compare_tuning's runs replaced by ``score(mode, lr)`` (the held-out
    and test metric); returns the runs started."""
    started = []

    def fake_run(cmd, stdout, **kwargs):
        phase, mode, lr = cmd[-4], cmd[-3], float(cmd[-2])
        started.append((phase, mode, lr, int(cmd[-1])))
        stdout.write(runner.RESULT + json.dumps(dict(
            metrics={'accuracy/top1': score(mode, lr)}, train_size=8,
            eval_size=2, stratified=True, holdout_by='by class',
            shared_images=0, train_s=1.0, peak_memory_mb=1.0,
            trainable_params=10, backbone_trainable_params=5)) + '\n')
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, 'run', fake_run)
    monkeypatch.setattr(
        'mslora_mm.analysis.comparison.campaign.shared_files', lambda cfg: [])
    return started


def test_extend_grid_adds_values_beyond_the_best_end(tmp_path, monkeypatch):
    """frozen rises to 1e-1 (extended twice: stops at N=2), mslora peaks at
    1e-2 (one extension, then inside), full is best at its low end (extended
    down); the report records every value added; the same command again
    starts nothing and its plan says so."""
    peaks = dict(frozen=1.0, mslora=1e-2, full=1e-5)
    started = _scored_tool(monkeypatch, lambda mode, lr: 100 - abs(
        math.log10(lr / peaks[mode])))
    out = tmp_path / 'out'
    argv = [osp.join(ROOT, EUROSAT5_CONFIG), '--modes', 'frozen', 'mslora',
            'full', '--holdout', '0.25', '--lr-grid', '1e-3', '3e-3',
            'full=1e-4,3e-4', '--extend-grid', '2', '--out', str(out),
            '--work-dir', str(tmp_path / 'work')]
    _tool_module().main(argv)
    selected = {(m, lr) for p, m, lr, _ in started if p == 'select'}
    assert selected == {('frozen', lr) for lr in (1e-3, 3e-3, 1e-2, 3e-2)} \
        | {('mslora', lr) for lr in (1e-3, 3e-3, 1e-2, 3e-2)} \
        | {('full', lr) for lr in (1e-4, 3e-4, 3e-5, 1e-5)}
    results = json.loads((out / 'results.json').read_text())
    p = results['protocol']
    assert p['extended'] == dict(frozen=[1e-2, 3e-2], mslora=[1e-2, 3e-2],
                                 full=[3e-5, 1e-5])
    assert p['chosen'] == dict(frozen=3e-2, mslora=1e-2, full=1e-5)
    assert p['first_grids']['full'] == [1e-4, 3e-4]
    assert '`--extend-grid 2`' in (out / 'results.md').read_text()
    n = len(started)
    _tool_module().main(argv + ['--dry-run'])
    assert len(started) == n


def test_documented_commands_keep_their_committed_runs(capsys):
    """docs/results.md's commands, rerun with --dry-run against the
    committed runs: one whose committed report that same command wrote
    starts nothing (the grid rule reproduces every committed grid); the
    others are the comparisons the docs say are running, and would start
    runs of their own."""
    import os
    import shlex
    commands = _documented_commands()
    assert len(commands) == 3
    running = open(osp.join(ROOT, 'docs/results.md')).read().count(
        '**Running**')
    unfinished = 0
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for argv in commands:
            report = osp.join(argv[argv.index('--out') + 1], 'results.md')
            done = osp.isfile(report) and (
                'Command: `python tools/analysis/compare_tuning.py '
                f'{shlex.join(argv)}`') in open(report).read()
            _tool_module().main(argv + ['--dry-run'])
            plan = capsys.readouterr().out
            would = [line.strip() for line in plan.splitlines()
                     if line.startswith('  ')]
            if done:
                assert '0 run(s) would start' in plan, (argv[0], would)
            else:
                unfinished += 1
                assert would and all(w.startswith(('select/', 'final/'))
                                     for w in would), argv[0]
    finally:
        os.chdir(cwd)
    assert unfinished == running


# --- unrounded scores (issue 45.5) --------------------------------------------

def test_coco_scores_reach_the_run_unrounded():
    """CocoMetric rounds COCOeval's mAP to 0.001; the comparison's metric
    returns the statistic itself (a value no 0.001 step holds)."""
    import torch
    from mmdet.evaluation import CocoMetric
    from mmengine.registry import METRICS, DefaultScope
    from mslora_mm.analysis.comparison.unrounded import unrounded_evaluators
    cfg = Config(dict(val_evaluator=dict(type='CocoMetric', ann_file=None),
                      test_evaluator=[dict(type='mmseg.IoUMetric')]))
    unrounded_evaluators(cfg)
    assert cfg.val_evaluator.type == 'mmdet.UnroundedCocoMetric'
    assert cfg.test_evaluator[0].type == 'mmseg.UnroundedIoUMetric'
    rng = np.random.RandomState(0)
    samples = []
    for i in range(6):
        boxes = torch.tensor(rng.uniform(0, 20, (3, 2))).float()
        gt = torch.cat([boxes, boxes + 10], 1)
        pred = gt + torch.tensor(rng.uniform(-3, 3, (3, 4))).float()
        samples.append(dict(
            img_id=i, ori_shape=(40, 40), instances=[
                dict(bbox=b.tolist(), bbox_label=0, ignore_flag=0)
                for b in gt],
            pred_instances=dict(bboxes=pred, scores=torch.rand(3),
                                labels=torch.zeros(3, dtype=torch.long))))
    values = []
    with DefaultScope.overwrite_default_scope('mmdet'):
        for metric in (CocoMetric(ann_file=None),
                       METRICS.build(dict(cfg.val_evaluator))):
            metric.dataset_meta = dict(classes=('thing', ))
            metric.process({}, copy.deepcopy(samples))
            values.append(metric.evaluate(6)['coco/bbox_mAP'])
    rounded, unrounded = values
    assert rounded == round(unrounded, 3) and unrounded != rounded
    assert 0 < unrounded < 1


def test_iou_scores_reach_the_run_unrounded():
    import torch
    from mmengine.registry import METRICS, DefaultScope
    from mmseg.evaluation import IoUMetric
    from mslora_mm.analysis.comparison.unrounded import unrounded_evaluators
    cfg = Config(dict(val_evaluator=dict(type='IoUMetric')))
    unrounded_evaluators(cfg)
    label = torch.tensor([[0, 1, 2], [1, 1, 2], [2, 2, 0]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2], [2, 2, 2]])
    logged = []
    with DefaultScope.overwrite_default_scope('mmseg'):
        for metric in (IoUMetric(), METRICS.build(dict(cfg.val_evaluator))):
            metric.dataset_meta = dict(classes=('a', 'b', 'c'))
            metric.results = [metric.intersect_and_union(pred, label, 3,
                                                         255)]
            logged.append(metric.compute_metrics(metric.results))
    # IoU per class: a 1/3, b 2/4, c 3/5 (float32, as IoUMetric's arrays)
    exact = 100 * (1 / 3 + 2 / 4 + 3 / 5) / 3
    assert logged[1]['mIoU'] == pytest.approx(exact, abs=1e-4)
    assert logged[0]['mIoU'] == round(exact, 2) != logged[1]['mIoU']
    assert logged[1]['aAcc'] == pytest.approx(100 * 6 / 9)


# --- runs that name the code that made them (issue 45.3) ----------------------

def test_the_source_fingerprint_follows_the_source(tmp_path):
    import shutil
    copy_root = tmp_path / 'repo'
    shutil.copytree(osp.join(ROOT, 'mslora_mm'), copy_root / 'mslora_mm',
                    ignore=shutil.ignore_patterns('__pycache__', '*.so'))
    package = str(copy_root / 'mslora_mm')
    here = provenance.source_fingerprint()
    assert provenance.source_fingerprint(package) == here  # wherever it lies
    (copy_root / 'mslora_mm' / 'notes.txt').write_text('not source')
    assert provenance.source_fingerprint(package) == here
    (copy_root / 'mslora_mm/core/csrc').mkdir(exist_ok=True)
    (copy_root / 'mslora_mm/core/csrc/extra.cpp').write_text('// native\n')
    native = provenance.source_fingerprint(package)
    assert native != here
    (copy_root / 'mslora_mm/version.py').write_text("__version__ = '9'\n")
    changed = provenance.source_fingerprint(package)
    assert changed not in (here, native)
    code = provenance.code_version(package)
    assert code['fingerprint'] == changed and code['commit'] is None
    assert set(code['versions']) == set(provenance.LIBRARIES)
    assert code['versions']['torch'].split('+')[0] in __import__(
        'torch').__version__


def test_a_kept_run_of_other_code_is_kept_flagged_or_rerun(tmp_path,
                                                          monkeypatch):
    started = _fake_tool(monkeypatch)
    sig = runner.signature(runner.run_config(
        osp.join(ROOT, EUROSAT5_CONFIG), None, 'final', 'frozen', 1e-3, 0,
        OPTIONS), OPTIONS)
    args = (['tool'], str(tmp_path / 'out'), str(tmp_path / 'work'), 'final',
            'frozen', 1e-3, 0, sig)
    old = dict(CODE, fingerprint='0' * 64)
    runner.launch(*args, old)
    kept = runner.launch(*args, CODE)
    assert len(started) == 1 and kept['code'] == old
    assert runner.launch(*args, CODE, dry_run=True) == kept
    assert runner.launch(*args, CODE, rerun_stale=True)['code'] == CODE
    assert len(started) == 2
    saved = json.loads((tmp_path / 'out/final/frozen/lr0.001_seed0.json')
                       .read_text())
    assert saved['code'] == CODE
    from mslora_mm.analysis.comparison.report import code_text, markdown_table
    runs = [dict(kept, metrics={'m': 1.0}, train_s=1.0, peak_memory_mb=1.0,
                 trainable_params=1, backbone_trainable_params=0),
            dict(kept, mode='mslora', code=CODE, metrics={'m': 2.0},
                 train_s=1.0, peak_memory_mb=1.0, trainable_params=2,
                 backbone_trainable_params=1)]
    text = code_text(runs, CODE)
    assert '| `000000000000` | `none` | torch x | final frozen 0.001 s0 | ' \
        '**no** |' in text
    assert '| `ffffffffffff` | `none` | torch x | final mslora 0.001 s0 | ' \
        'yes |' in text
    table = markdown_table(stats.summarise(runs, ['m']), ['m'],
                           ['frozen'])
    assert '| frozen † |' in table and '| mslora |' in table


def test_every_committed_run_names_the_commit_that_added_it():
    """Each run file under docs/results/ records the code that made it:
    runs made before run files recorded it carry the fingerprint of the
    package at the commit that added the file."""
    import glob
    files = []
    for path in glob.glob(osp.join(ROOT, 'docs/results/**/*.json'),
                          recursive=True):
        try:
            if 'signature' in json.loads(open(path).read()):
                files.append(path)
        except ValueError:  # a log of JSON lines
            continue
    assert len(files) > 100
    at = {}
    for path in files:
        code = json.loads(open(path).read()).get('code')
        assert code and len(code['fingerprint']) == 64, path
        commit = provenance.adding_commit(path)
        if commit is None:  # not committed yet: made by this checkout
            continue
        if code['source'].startswith('from git history'):
            assert code['commit'] == commit, path
            if commit not in at:
                at[commit] = provenance.fingerprint_at(commit)
            assert code['fingerprint'] == at[commit], path
    assert at, 'no committed run file was checked'


# --- train / test overlap (issue 45.7) -----------------------------------------

def test_byte_identical_train_and_test_images_are_named(tmp_path, capsys):
    from mslora_mm.analysis.comparison.campaign import shared_files
    from mslora_mm.analysis.comparison.report import shared_line
    root = _image_folder(tmp_path / 'train', per_class=(3, 3))
    test = _image_folder(tmp_path / 'test', per_class=(2, 2))
    import shutil
    shutil.copy(osp.join(root, 'c1', '2.png'), osp.join(test, 'c0', 'x.png'))
    cfg = Config(dict(default_scope='mmpretrain', train_dataloader=dict(
        dataset=dict(type='CustomDataset', data_root=root, pipeline=[])),
        val_dataloader=dict(dataset=dict(type='RepeatDataset', times=2,
                                         dataset=dict(type='CustomDataset',
                                                      data_root=test,
                                                      pipeline=[])))))
    pairs = shared_files(cfg)
    # the folders' first images are the same pixels (seed 0): 0.png of c0
    # and c1 in both, plus the copy
    assert (osp.join(root, 'c1', '2.png'), osp.join(test, 'c0', 'x.png')) \
        in pairs
    assert all(open(a, 'rb').read() == open(b, 'rb').read()
               for a, b in pairs)
    assert '`2.png` = `x.png`' in shared_line([list(p) for p in pairs])


def test_neu_det_train_and_val_share_one_image_named_in_the_docs():
    shared_data('neu-det')
    from mslora_mm.analysis.comparison.campaign import shared_files
    import os
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        cfg = runner.run_config(
            'configs/experiments/'
            'faster-rcnn_efficientnet-lite0_mslora_neu-det.py', None,
            'final', 'frozen', 1e-3, 0, OPTIONS)
        pairs = shared_files(cfg)
    finally:
        os.chdir(cwd)
    assert [(osp.basename(a), osp.basename(b)) for a, b in pairs] == [
        ('patches_105.jpg', 'patches_101.jpg')]
    text = open(osp.join(ROOT, 'docs/results.md')).read()
    assert '`patches_105.jpg` (training) and `patches_101.jpg` (val)' in text


# --- settings chosen after the lr (issue 47.1, 47.2) --------------------------
CAMVID_CONFIG = 'configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py'
NEU_DET_CONFIG = \
    'configs/experiments/faster-rcnn_efficientnet-lite0_mslora_neu-det.py'


def test_a_variant_names_itself_and_changes_only_what_it_says():
    v = Variant(schedule=2, weight_decay=0.01, norm_eval=False)
    assert v.tag == 'x2_wd0.01_bn-updated'
    assert Variant.parse(v.tag) == v and Variant.parse('') == Variant()
    assert v.words() == ('schedule ×2, weight decay 0.01, BatchNorm '
                         'statistics updated')
    with pytest.raises(ValueError, match="'y2' is none of"):
        Variant.parse('y2')
    base = runner.run_config(osp.join(ROOT, CAMVID_CONFIG), None, 'final',
                             'full', 1e-3, 0, OPTIONS)
    cfg = runner.run_config(osp.join(ROOT, CAMVID_CONFIG), None, 'final',
                            'full', 1e-3, 0, OPTIONS, v)
    assert (base.train_cfg.max_iters, cfg.train_cfg.max_iters) == (300, 600)
    warm, poly = cfg.param_scheduler
    assert (warm.end, poly.begin, poly.end) == (30, 30, 600)
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.01
    assert base.model.backbone.norm_eval is True
    assert cfg.model.backbone.norm_eval is False
    assert cfg.train_cfg.val_interval == 600  # scored once, at the end
    # the wrapped backbone of an adapter mode carries it where it is set
    mslora = runner.run_config(osp.join(ROOT, CAMVID_CONFIG), None, 'final',
                               'mslora', 1e-3, 0, OPTIONS,
                               Variant(norm_eval=False))
    assert mslora.model.backbone.backbone.norm_eval is False
    # a cosine ending with the training: its end and T_max follow
    neu = runner.run_config(osp.join(ROOT, NEU_DET_CONFIG), None, 'final',
                            'mslora', 1e-3, 0, OPTIONS, Variant(schedule=3))
    cosine = neu.param_scheduler[-1]
    assert neu.train_cfg.max_iters == cosine.end == cosine.T_max == 3240
    # an epoch loop: its iteration warm-up stays
    eurosat = runner.run_config(osp.join(ROOT, EUROSAT5_CONFIG), None,
                                'final', 'mslora', 1e-3, 0, OPTIONS,
                                Variant(schedule=2))
    assert eurosat.train_cfg.max_epochs == 2 * Config.fromfile(osp.join(
        ROOT, EUROSAT5_CONFIG)).train_cfg.max_epochs
    assert eurosat.param_scheduler[0].end == 20
    late = Config.fromfile(osp.join(ROOT, CAMVID_CONFIG))
    late.param_scheduler[1].end = 400
    with pytest.raises(ValueError, match=r'param_scheduler\[1\] \(PolyLR\)'
                       ' ends at 400'):
        Variant(schedule=2).apply(late)


def _setting_tool(monkeypatch, score):
    """compare_tuning's runs replaced by ``score(phase, mode, lr, tag)``;
    returns the runs started as ``(phase, mode, lr, tag, seed)``."""
    started = []

    def fake_run(cmd, stdout, **kwargs):
        phase, mode, lr, seed = cmd[-4], cmd[-3], float(cmd[-2]), cmd[-1]
        tag = cmd[cmd.index('--variant') + 1] if '--variant' in cmd else ''
        started.append((phase, mode, lr, tag, int(seed)))
        curve = [dict(iter=i, epoch=0, metrics={'accuracy/top1': i / 10})
                 for i in (50, 100)] if phase == 'select' else []
        stdout.write(runner.RESULT + json.dumps(dict(
            metrics={'accuracy/top1': score(phase, mode, lr, tag)},
            train_size=8, eval_size=2, stratified=True,
            holdout_by='by class', shared_images=0, train_s=1.0,
            peak_memory_mb=1.0, trainable_params=10,
            backbone_trainable_params=5,
            **({'curve': curve} if curve else {}))) + '\n')
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(runner.subprocess, 'run', fake_run)
    monkeypatch.setattr(
        'mslora_mm.analysis.comparison.campaign.shared_files', lambda cfg: [])
    return started


def test_schedule_and_batchnorm_are_chosen_after_the_lr(tmp_path,
                                                        monkeypatch):
    """At each mode's chosen lr: x2 runs for every mode, then BatchNorm
    statistics updated for full only; mslora gains from x2 and keeps it,
    frozen ties (keeps x1), full gains from both; the final runs carry each
    mode's setting; the report has the table and the curves; a rerun
    starts nothing."""
    gains = {('mslora', 'x2'): 1.0, ('full', 'x2'): 2.0,
             ('full', 'x2_bn-updated'): 3.0, ('full', 'bn-updated'): -5.0}

    def score(phase, mode, lr, tag):
        return 90 - abs(math.log10(lr / 1e-3)) + gains.get((mode, tag), 0)

    started = _setting_tool(monkeypatch, score)
    out = tmp_path / 'out'
    argv = [osp.join(ROOT, CAMVID_CONFIG), '--modes', 'frozen', 'mslora',
            'full', '--holdout', '0.25', '--lr-grid', '3e-4', '1e-3',
            '3e-3', '--schedule-grid', '1', '2', '--bn-choice', 'full',
            '--curve-every', '50', '--seeds', '2', '--out', str(out),
            '--work-dir', str(tmp_path / 'work')]
    _tool_module().main(argv)
    variants = {(m, lr, t) for p, m, lr, t, _ in started
                if p == 'select' and t}
    assert variants == {('frozen', 1e-3, 'x2'), ('mslora', 1e-3, 'x2'),
                        ('full', 1e-3, 'x2'), ('full', 1e-3, 'x2_bn-updated')}
    final = {(m, t) for p, m, lr, t, _ in started if p == 'final'}
    assert final == {('frozen', ''), ('mslora', 'x2'),
                     ('full', 'x2_bn-updated')}
    assert (out / 'final/full/lr0.001_x2_bn-updated_seed1.json').is_file()
    results = json.loads((out / 'results.json').read_text())
    assert results['protocol']['variants'] == dict(
        frozen='', mslora='x2', full='x2_bn-updated')
    assert results['protocol']['curve_every'] == 50
    full = results['selection_variants']['full']
    assert full['x2_bn-updated']['mean'] == 93.0
    assert full['x2']['curves'] == [[[50, 0, 5.0], [100, 0, 10.0]]]
    text = (out / 'results.md').read_text()
    assert '| full | 0.001 (schedule ×2, BatchNorm statistics updated) |' \
        in text
    assert '| full | 90.000 | 92.000 | **93.000** |' in text
    assert 'full `updated by training (norm_eval False)`' in text
    assert (out / 'curves.png').stat().st_size > 0
    # the lr table holds the runs of the config as it is only
    assert set(results['selection']['full']) == {'0.0003', '0.001', '0.003'}
    n = len(started)
    _tool_module().main(argv)
    assert len(started) == n


def test_a_plan_waits_for_the_lr_before_the_settings(tmp_path, monkeypatch,
                                                      capsys):
    started = _setting_tool(monkeypatch, lambda *a: 1.0)
    _tool_module().main([
        osp.join(ROOT, CAMVID_CONFIG), '--modes', 'mslora', '--holdout',
        '0.25', '--lr-grid', '1e-3', '3e-3', '--schedule-grid', '1', '2',
        '--out', str(tmp_path / 'out'), '--work-dir',
        str(tmp_path / 'work'), '--dry-run'])
    plan = capsys.readouterr().out
    assert started == []
    assert '  select/mslora/lr0.001_seed1000' in plan
    assert 'x2' not in plan and 'final/mslora/(setting after' in plan


def test_settings_need_a_holdout():
    with pytest.raises(SystemExit):
        _tool_module().parse_args([CAMVID_CONFIG, '--schedule-grid', '1',
                                   '2'])


def test_max_runs_stops_before_the_next_run_and_the_command_resumes(
        tmp_path, monkeypatch, capsys):
    started = _setting_tool(monkeypatch, lambda *a: 1.0)
    argv = [osp.join(ROOT, CAMVID_CONFIG), '--modes', 'frozen', 'mslora',
            '--holdout', '0.25', '--lr-grid', '1e-3', '3e-3', '--out',
            str(tmp_path / 'out'), '--work-dir', str(tmp_path / 'work')]
    _tool_module().main(argv + ['--max-runs', '3'])
    assert len(started) == 3
    assert 'stopped before select/mslora/lr0.003_seed1000: --max-runs 3' \
        in capsys.readouterr().out
    assert not (tmp_path / 'out/results.md').exists()
    _tool_module().main(argv + ['--max-runs=10'])
    assert len(started) == 4 + 2  # the last selection run, two final runs
    assert '--max-runs' not in (tmp_path / 'out/results.md').read_text()
