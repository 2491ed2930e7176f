"""tools/analysis/compare_tuning.py: the modes it derives from a config and
an end-to-end comparison whose outputs hold the numbers the runs logged."""
import copy
import glob
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from helpers import ROOT

from mslora_mm.analysis.tuning import tuning_mode_config as mode_config

HYMENOPTERA = osp.join(osp.dirname(ROOT), 'shared', 'data', 'hymenoptera')


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


@pytest.mark.slow
def test_two_modes_one_seed_outputs_hold_the_logged_numbers(tmp_path):
    """frozen vs mslora, one seed, 2 iterations of ResNet-18 on the real
    ants/bees at 64 px, evaluated after each: results.json, results.md and
    curves.png hold exactly what each run wrote to its scalars.json."""
    from helpers import hymenoptera_config
    if not osp.isdir(HYMENOPTERA):
        pytest.skip(f'hymenoptera not found at {HYMENOPTERA}')
    cfg = hymenoptera_config(
        tmp_path, 'configs/classification/resnet50_mslora_food101.py',
        HYMENOPTERA, backbone=dict(depth=18, zero_init_residual=False))
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, 'tools/analysis/compare_tuning.py', cfg, '--modes',
         'frozen', 'mslora', '--seeds', '1', '--out', str(out),
         '--cfg-options', 'model.head.in_channels=512',
         'model.backbone.plugin_position=None',
         'model.backbone.sites=[layer*.*]',
         'model.backbone.adapter_cfg.rank=16', 'train_cfg.val_interval=1'],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads((out / 'results.json').read_text())
    assert [r['mode'] for r in results['runs']] == ['frozen', 'mslora']
    assert results['metrics'] == ['accuracy/top1']
    table = (out / 'results.md').read_text()
    for run in results['runs']:
        scalars = glob.glob(osp.join(run['work_dir'], '*', 'vis_data',
                                     'scalars.json'))
        assert len(scalars) == 1, run['work_dir']
        logged = [json.loads(line) for line in open(scalars[0])]
        top1 = [e['accuracy/top1'] for e in logged if 'accuracy/top1' in e]
        assert len(top1) == 2  # evaluated after iterations 1 and 2
        assert [(e['iter'], e['metrics']['accuracy/top1'])
                for e in run['evaluations']] == [(1, top1[0]), (2, top1[1])]
        assert run['metrics']['accuracy/top1'] == top1[-1]
        mean = results['summary'][run['mode']]['mean']['accuracy/top1']
        assert mean == top1[-1]
        assert f'| {run["mode"]} |' in table
        assert f'{mean:.3f} ± 0.000' in table
        assert run['peak_memory_mb'] > 100 and run['train_s'] > 0
    frozen, mslora = (results['summary'][m] for m in ('frozen', 'mslora'))
    assert frozen['backbone_trainable_params'] == 0
    assert mslora['backbone_trainable_params'] > 0
    assert mslora['trainable_params'] == (
        frozen['trainable_params'] + mslora['backbone_trainable_params'])
    import matplotlib.image as mpimg
    png = mpimg.imread(str(out / 'curves.png'))
    assert png.ndim == 3 and png.shape[0] > 200 and png.std() > 0.01


def test_finished_runs_are_kept_and_rerun_on_request(tmp_path, monkeypatch):
    """A rerun keeps a finished (mode, seed) of the same signature without
    starting a process; another signature or ``rerun`` runs it again."""
    from mslora_mm.analysis import comparison
    config = osp.join(ROOT, 'configs/experiments/'
                      'efficientnet-lite0_mslora_eurosat5.py')
    started = []

    def fake_run(cmd, stdout, **kwargs):
        started.append(cmd)
        stdout.write(comparison.RESULT + json.dumps(dict(mode=cmd[-2])) +
                     '\n')
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(comparison.subprocess, 'run', fake_run)
    sig = comparison.signature(config, None, None)
    first = comparison.launch(['tool'], str(tmp_path), 'lora', 0, sig)
    assert first == dict(mode='lora') and len(started) == 1
    assert json.loads((tmp_path / 'lora' / 'seed0' / 'result.json'
                       ).read_text())['signature'] == sig
    assert comparison.launch(['tool'], str(tmp_path), 'lora', 0, sig) == \
        first and len(started) == 1  # kept
    other = comparison.signature(config, dict(lr=1.0), None)
    comparison.launch(['tool'], str(tmp_path), 'lora', 0, other)
    comparison.launch(['tool'], str(tmp_path), 'lora', 0, other, rerun=True)
    assert len(started) == 3
    assert started[-1][-3:] == ['--run', 'lora', '0']


EUROSAT5 = osp.join(osp.dirname(ROOT), 'shared', 'data', 'eurosat5')
NEU_DET = osp.join(osp.dirname(ROOT), 'shared', 'data', 'neu-det')


@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['eurosat5', 'neu-det'])
def test_five_modes_from_the_cli_on_a_small_subset(dataset, tmp_path):
    """The five modes of each experiment config, one seed, two iterations
    on a small subset of the real data; every mode evaluated and counted."""
    if dataset == 'eurosat5':
        if not osp.isdir(EUROSAT5):
            pytest.skip('eurosat5 not found')
        config = 'configs/experiments/efficientnet-lite0_mslora_eurosat5-20pc.py'
        options = ['train_dataloader.dataset.per_class=2',
                   'train_dataloader.batch_size=4', 'train_cfg.max_epochs=1',
                   'train_cfg.val_interval=1',
                   'val_dataloader.dataset.indices=40',
                   'model.backbone.backbone.init_cfg=None']
        metric = 'accuracy/top1'
    else:
        if not osp.isdir(NEU_DET):
            pytest.skip('neu-det not found')
        ids = tmp_path / 'ids.txt'
        ids.write_text('crazing_1\ninclusion_1\npatches_1\nscratches_1\n')
        config = ('configs/experiments/'
                  'faster-rcnn_efficientnet-lite0_mslora_neu-det.py')
        options = [f'train_dataloader.dataset.ann_file={ids}',
                   f'val_dataloader.dataset.ann_file={ids}',
                   'train_dataloader.batch_size=2', 'max_iters=2',
                   'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                   'model.backbone.backbone.init_cfg=None']
        metric = 'coco/bbox_mAP'
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, 'tools/analysis/compare_tuning.py', config,
         '--seeds', '1', '--out', str(out), '--cfg-options', *options],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads((out / 'results.json').read_text())
    assert [r['mode'] for r in results['runs']] == [
        'frozen', 'mslora', 'lora', 'mona', 'full']
    assert metric in results['metrics']
    summary = results['summary']
    assert summary['frozen']['backbone_trainable_params'] == 0
    mslora = summary['mslora']['backbone_trainable_params']
    assert abs(summary['lora']['backbone_trainable_params'] / mslora - 1) \
        <= 0.2
    assert summary['mona']['backbone_trainable_params'] > 0
    assert summary['full']['backbone_trainable_params'] > 10 * mslora
    assert 'tuning mode lora: rank' in (out / 'lora' / 'seed0' / 'run.log'
                                        ).read_text()
