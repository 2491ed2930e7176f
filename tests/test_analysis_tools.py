"""tools/analysis: the parameter counter CLI and the benchmark runner."""
import json

import pytest
from mmengine.config import Config

from conftest import ROOT
from helpers import run_tool
from mmdet.registry import MODELS
from mslora_mm import count_parameters

R18 = ['model.backbone.depth=18', 'model.neck.in_channels=[64,128,256,512]']


def test_count_params_cli_matches_api():
    config = 'configs/mask_rcnn_r50_mslora_1x.py'
    out = run_tool('tools/analysis/count_params.py', config, '--json',
                   '--cfg-options', *R18, stdout_only=True)
    counts = json.loads(out[out.index('{'):])
    cfg = Config.fromfile(f'{ROOT}/{config}')
    cfg.merge_from_dict({'model.backbone.depth': 18,
                         'model.neck.in_channels': [64, 128, 256, 512]})
    assert counts == pytest.approx(count_parameters(MODELS.build(cfg.model)))
    table = run_tool('tools/analysis/count_params.py', config,
                     '--cfg-options', *R18, stdout_only=True)
    assert f'{counts["adapter"] / 1e6:.3f}M' in table


@pytest.mark.slow
def test_benchmark_reports_all_modes_and_ratios():
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/mask_rcnn_r50_mslora_1x.py', '--img-size', '64',
                   '--iters', '1', '--warmup', '0', '--json', '--cfg-options',
                   *R18, stdout_only=True)
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result['modes']) == {'full', 'frozen', 'mslora', 'floor'}
    modes = result['modes']
    assert modes['full']['trainable_params'] > \
        modes['mslora']['trainable_params'] > \
        modes['frozen']['trainable_params'] == \
        modes['floor']['trainable_params']
    for key in ('mslora_vs_full_time', 'mslora_vs_full_memory',
                'mslora_vs_frozen_infer_time', 'floor_vs_full_time',
                'floor_vs_full_memory'):
        assert result[key] > 0
    assert result['mslora_vs_full_memory'] == pytest.approx(
        modes['mslora']['peak_memory_mb'] / modes['full']['peak_memory_mb'])


@pytest.mark.slow
def test_benchmark_repeats_and_mode_subset():
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/mask_rcnn_r50_mslora_1x.py', '--img-size', '64',
                   '--iters', '1', '--warmup', '0', '--json', '--repeats',
                   '2', '--modes', 'frozen', 'floor', '--cfg-options', *R18,
                   stdout_only=True)
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result['modes']) == {'frozen', 'floor'}
    assert not any(key.endswith(('_time', '_memory')) for key in result)
    for mode, runs in result['runs'].items():
        assert len(runs) == 2
        steps = sorted(r['train_step_s'] for r in runs)
        assert result['modes'][mode]['train_step_s'] == \
            pytest.approx(sum(steps) / 2)


@pytest.mark.parametrize('adapted, host', [
    (dict(type='MSLoRAResNet', depth=18), 'layer1.0'),
    (dict(type='MSLoRABackbone', backbone=dict(
        type='mmpretrain.ConvNeXt', arch='tiny'), sites=['stages.*.*']),
     'stages.0.0'),
])
def test_benchmark_floor_mode_backpropagates_through_frozen_body(adapted,
                                                                 host):
    """The floor's gradients start at the module hosting the first adapter,
    which the benchmark asks of the MSLoRA mechanism (any backbone)."""
    import importlib.util
    import torch
    spec = importlib.util.spec_from_file_location(
        'benchmark', f'{ROOT}/tools/analysis/benchmark.py')
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.first_adapted_module(adapted) == host
    backbone = MODELS.build(benchmark.backbone_for('floor', adapted))
    assert not any('mslora' in n for n, _ in backbone.named_modules())
    backbone.requires_grad_(False)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    assert not backbone(x)[-1].requires_grad
    backbone.get_submodule(host).register_forward_pre_hook(
        benchmark.require_input_grad)
    assert backbone(x)[-1].requires_grad
    with pytest.raises(TypeError, match='--modes full frozen'):
        benchmark.first_adapted_module(dict(type='ResNet', depth=18))
