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
