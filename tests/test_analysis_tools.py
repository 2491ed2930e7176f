"""tools/analysis: the parameter counter CLI and the benchmark runner."""
import copy
import json
import os

import pytest
import torch
from mmengine.config import Config

from helpers import ROOT
from helpers import run_tool
from mmdet.registry import MODELS
from mslora_mm import count_parameters

R18 = ['model.backbone.depth=18', 'model.neck.in_channels=[64,128,256,512]']
#: GFLOP of mmdet's ResNet-18 body in one forward of 2 x 3 x 64 x 64, by
#: hand: 2 x multiply-adds of the stem (64 x 3 x 7 x 7 x 32^2), layer1
#: (4 x 64 x 64 x 9 x 16^2) and layers 2-4 (each 33554432: 3 x 3 convs and
#: a 1 x 1 downsample at 8^2, 4^2, 2^2), a picture each
R18_GFLOP = 2 * 2 * (9633792 + 37748736 + 3 * 33554432) / 1e9
#: how the names of the benchmark's ratios end
RATIO_ENDINGS = ('_time', '_memory', '_backward', '_flops')


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
def test_benchmark_reports_all_modes_ratios_and_memory_peaks():
    """Every detector mode in its own process, the ratios of their figures,
    and (--timeline) each last step's memory peak after events the step
    really marks (phases, neck and heads, adapter hosts); the text report
    of the same summary names each peak."""
    from mslora_mm.analysis.cost.benchmark import format_summary
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/mask_rcnn_r50_mslora_1x.py', '--img-size', '64',
                   '--iters', '1', '--warmup', '0', '--json', '--timeline',
                   '--cfg-options', *R18, stdout_only=True)
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result['modes']) == {'full', 'frozen', 'mslora', 'floor'}
    modes = result['modes']
    assert modes['full']['trainable_params'] > \
        modes['mslora']['trainable_params'] > \
        modes['frozen']['trainable_params'] == \
        modes['floor']['trainable_params']
    # every ratio of the four modes (their values: the summary's own test)
    assert {k for k in result if k.endswith(RATIO_ENDINGS)} == {
        'mslora_vs_full_time', 'mslora_vs_full_memory',
        'mslora_vs_frozen_infer_time', 'floor_vs_full_time',
        'floor_vs_full_memory', 'floor_vs_full_backward',
        'mslora_vs_full_backbone_flops'}
    assert all(result[k] > 0 for k in result if k.endswith(RATIO_ENDINGS))
    for mode in ('full', 'frozen', 'floor'):  # one ResNet-18 body, by hand
        assert modes[mode]['backbone_gflop'] == pytest.approx(R18_GFLOP)
    assert result['mslora_vs_full_backbone_flops'] > 1
    hosts = {f'{phase} layer{s}.{b}' for phase in ('forward', 'backward')
             for s, blocks in enumerate((2, 2, 2, 2), 1)
             for b in range(blocks)}
    known = hosts | {'forward', 'backward', 'optimizer', 'forward neck',
                     'forward rpn_head', 'forward roi_head'}
    for mode in modes:
        peak = modes[mode]['timeline_peak']
        assert peak['mb'] > 0 and 0 <= peak['at_s'] <= peak['of_s']
        assert peak['after'] and set(peak['after']) <= known, peak
    text = format_summary(result)
    for mode in modes:
        assert f'{mode} memory peak (last step):' in text
    assert f"mslora_vs_full_time: {result['mslora_vs_full_time']:.2f}" in text


@pytest.mark.slow
def test_benchmark_repeats_a_mode_subset_with_amp():
    """--repeats 2 --modes floor --amp on the detector: two processes a
    mode, each metric the median of theirs; bf16 autocast ran (the
    backbone's output dtype) and the heads' step went through the AMP
    optimizer wrapper (the backbone-only --amp test covers every mode)."""
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/mask_rcnn_r50_mslora_1x.py', '--img-size', '64',
                   '--iters', '1', '--warmup', '0', '--json', '--repeats',
                   '2', '--modes', 'floor', '--amp',
                   '--cfg-options', *R18, stdout_only=True)
    result = json.loads(out.strip().splitlines()[-1])
    assert result['amp'] is True
    assert set(result['modes']) == {'floor'}
    assert not any(key.endswith(('_time', '_memory')) for key in result)
    for mode, runs in result['runs'].items():
        assert len(runs) == 2 and runs[0] != runs[1]  # two processes
        steps = sorted(r['train_step_s'] for r in runs)
        assert steps[0] <= result['modes'][mode]['train_step_s'] <= steps[1]
        r = result['modes'][mode]
        assert r['backbone_dtype'] == 'torch.bfloat16', mode
        assert r['optim_wrapper'] == 'CPUAmpOptimWrapper', mode  # the heads


def test_benchmark_summary_takes_medians_and_ratios_of_medians():
    """Three repeats per mode whose medians differ from their means: the
    summary holds the medians and the ratios of medians (hand values)."""
    from mslora_mm.analysis.cost import benchmark as cost

    def run(step, memory):
        return dict({k: 1.0 for k in cost.METRICS}, train_step_s=step,
                    peak_memory_mb=memory, mode='x')

    runs = dict(full=[run(2.0, 100.0), run(10.0, 900.0), run(3.0, 200.0)],
                mslora=[run(6.0, 700.0), run(1.0, 60.0), run(1.5, 150.0)])
    summary = cost.summarise(cost.CostRun('cfg.py'), runs, repeats=3)
    assert summary['modes']['full']['train_step_s'] == 3.0  # mean: 5
    assert summary['modes']['mslora']['peak_memory_mb'] == 150.0
    assert summary['mslora_vs_full_time'] == 0.5  # mean ratio: 0.57
    assert summary['mslora_vs_full_memory'] == 0.75
    assert 'floor_vs_full_time' not in summary  # no floor runs
    assert summary['runs'] is runs


def test_benchmark_summary_ratios_are_those_worked_out_by_hand():
    """One run of each of the five modes with distinct figures: every ratio
    of the summary, and of its text, is the one worked out by hand."""
    from mslora_mm.analysis.cost import benchmark as cost
    figures = {  # train step, backward, peak memory, inference, GFLOP
        'full': (4.0, 2.5, 800.0, 0.7, 10.0),
        'frozen': (1.0, 0.0, 200.0, 0.5, 10.0),
        'mslora': (3.0, 1.5, 400.0, 0.9, 13.0),
        'floor': (1.0, 1.0, 700.0, 0.5, 10.0),
        'peft-lora': (5.0, 2.0, 640.0, 0.8, 11.0)}
    runs = {mode: [dict({k: 1.0 for k in cost.METRICS}, mode=mode,
                        trainable_params=1,
                        train_step_s=step, backward_s=backward,
                        peak_memory_mb=memory, infer_s=infer,
                        backbone_gflop=gflop)]
            for mode, (step, backward, memory, infer, gflop)
            in figures.items()}
    summary = cost.summarise(cost.CostRun('cfg.py'), runs, repeats=1)
    by_hand = {
        'mslora_vs_full_time': 0.75,  # 3 / 4
        'mslora_vs_full_memory': 0.5,  # 400 / 800
        'mslora_vs_frozen_infer_time': 1.8,  # 0.9 / 0.5
        'floor_vs_full_time': 0.25,  # 1 / 4
        'floor_vs_full_memory': 0.875,  # 700 / 800
        'floor_vs_full_backward': 0.4,  # 1 / 2.5
        'mslora_vs_full_backbone_flops': 1.3,  # 13 / 10
        'mslora_vs_peft-lora_time': 0.6,  # 3 / 5
        'mslora_vs_peft-lora_memory': 0.625,  # 400 / 640
        'peft-lora_vs_full_time': 1.25,  # 5 / 4
        'peft-lora_vs_full_memory': 0.8}  # 640 / 800
    ratios = {k: v for k, v in summary.items() if k.endswith(RATIO_ENDINGS)}
    assert ratios == pytest.approx(by_hand)
    text = cost.format_summary(summary).splitlines()
    assert [line for line in text if line.split(':')[0] in by_hand] == [
        f'{k}: {v:.2f}' for k, v in by_hand.items()]


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
    import torch
    from mslora_mm.analysis.cost import benchmark as cost
    assert cost.first_adapted_module(adapted) == host
    backbone = MODELS.build(cost.backbone_for('floor', adapted))
    assert not any('mslora' in n for n, _ in backbone.named_modules())
    backbone.requires_grad_(False)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    assert not backbone(x)[-1].requires_grad
    backbone.get_submodule(host).register_forward_pre_hook(
        cost.require_input_grad)
    assert backbone(x)[-1].requires_grad
    with pytest.raises(TypeError, match='--modes full frozen'):
        cost.first_adapted_module(dict(type='ResNet', depth=18))


def test_peft_lora_peer_adapts_every_conv_of_the_adapted_blocks():
    """The peer: peft LoRA (rank r) on every Conv2d of the modules hosting
    MSLoRA adapters; zero-initialised, so the output is the stock one, and
    only the LoRA factors receive gradients."""
    import torch
    import torch.nn as nn
    from mslora_mm.analysis.cost import benchmark as cost
    adapted = dict(type='MSLoRAResNet', depth=18)
    hosts = cost.adapter_hosts(adapted)
    assert hosts[0] == 'layer1.0' and len(hosts) == 8
    torch.manual_seed(0)
    stock = MODELS.build(cost.backbone_for('peft-lora', adapted))
    stock.eval()  # mmdet's ResNet.train returns None
    convs = {f'{h}.{n}': m for h in hosts
             for n, m in stock.get_submodule(h).named_modules()
             if isinstance(m, nn.Conv2d)}
    assert len(convs) == 8 * 2 + 3  # two per block, three downsamples
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = [o.clone() for o in stock(x)]
    from mslora_mm.models.peft_lora import add_peft_lora
    peer = add_peft_lora(stock, hosts, rank=4)
    trainable = {n: p for n, p in peer.named_parameters() if p.requires_grad}
    assert all('lora_' in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == sum(
        4 * (c.in_channels * c.kernel_size[0] * c.kernel_size[1]
             + c.out_channels) for c in convs.values())
    out = peer(x)
    for o, e in zip(out, expected):
        torch.testing.assert_close(o, e)
    sum(o.square().mean() for o in out).backward()
    grads = {n for n, p in trainable.items() if p.grad is not None
             and p.grad.abs().sum() > 0}
    assert grads and all('lora_B' in n for n in grads)  # B = 0: A gets none
    assert not any(p.grad is not None for n, p in peer.named_parameters()
                   if n not in trainable)


@pytest.mark.slow
def test_benchmark_backbone_only_with_peft_peer():
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/mask_rcnn_r50_mslora_1x.py', '--backbone-only',
                   '--img-size', '64', '--iters', '1', '--warmup', '0',
                   '--peft-rank', '4', '--json', '--cfg-options', *R18,
                   stdout_only=True)
    result = json.loads(out.strip().splitlines()[-1])
    modes = result['modes']
    assert result['backbone_only']
    assert set(modes) == {'full', 'frozen', 'mslora', 'floor', 'peft-lora'}
    assert modes['full']['trainable_params'] == 11176512  # ResNet-18 body
    assert modes['frozen']['trainable_params'] == 0
    assert modes['floor']['trainable_params'] == 0
    assert modes['frozen']['backward_steps'] == 0  # no gradient anywhere
    for mode in ('full', 'mslora', 'floor', 'peft-lora'):
        r = modes[mode]
        assert r['backward_s'] > 0
    assert modes['floor']['optimizer_steps'] == 0  # nothing to update
    assert modes['mslora']['optimizer_steps'] == 1
    assert {'floor_vs_full_backward', 'mslora_vs_peft-lora_time',
            'peft-lora_vs_full_memory'} <= set(result)
    # arithmetic: one body for full, frozen and floor (by hand); mslora adds
    # exactly its adapters' convolutions, counted here with hooks; peft its
    # factors
    for mode in ('full', 'frozen', 'floor'):
        assert modes[mode]['backbone_gflop'] == pytest.approx(R18_GFLOP)
    assert modes['peft-lora']['backbone_gflop'] > R18_GFLOP
    assert modes['mslora']['backbone_gflop'] - R18_GFLOP == pytest.approx(
        adapter_gflop(dict(type='MSLoRAResNet', depth=18), (2, 3, 64, 64)))
    # every ratio of the five modes (their values: the summary's own test)
    assert {k for k in result if k.endswith(RATIO_ENDINGS)} == {
        'mslora_vs_full_time', 'mslora_vs_full_memory',
        'mslora_vs_frozen_infer_time', 'floor_vs_full_time',
        'floor_vs_full_memory', 'floor_vs_full_backward',
        'mslora_vs_full_backbone_flops', 'mslora_vs_peft-lora_time',
        'mslora_vs_peft-lora_memory', 'peft-lora_vs_full_time',
        'peft-lora_vs_full_memory'}


def adapter_gflop(backbone: dict, shape) -> float:
    """2 x the multiply-adds of every adapter convolution of ``backbone``
    in one forward of an input of ``shape``, in GFLOP."""
    import torch
    import torch.nn as nn
    from mslora_mm.models import adapter_modules
    model = MODELS.build(backbone)
    flops = []
    for _, adapter in adapter_modules(model):
        for conv in adapter.modules():
            if isinstance(conv, nn.Conv2d):
                conv.register_forward_hook(lambda m, _, out: flops.append(
                    2 * out.numel() * m.weight[0].numel()))
    model.eval()
    from mslora_mm.core.runtime import runtime
    with torch.no_grad(), runtime(kernel='stock'):  # DW as layers
        model(torch.randn(shape))
    assert len(flops) == 8 * 7  # 8 adapters: Pv, Pa, 3 DW, PW, Up
    return sum(flops) / 1e9


def test_memory_timeline_finds_the_phase_of_the_peak():
    """A 256 MB tensor that lives only between two marks: the timeline's
    peak lies there, at least 200 MB above the start. Each phase lasts until
    the sampler has sampled it (not a fixed time: a busy machine may starve
    the sampling thread)."""
    import time

    import torch
    from mslora_mm.analysis.cost.memory import MemoryTimeline

    def sampled(timeline, count=3, limit=30.0):
        start, deadline = len(timeline.samples), time.monotonic() + limit
        while len(timeline.samples) < start + count:
            assert time.monotonic() < deadline, 'the sampler never sampled'
            time.sleep(0.002)

    timeline = MemoryTimeline(torch.device('cpu'))
    with timeline:
        timeline.mark('before')
        sampled(timeline)
        timeline.mark('big')
        big = torch.ones(64 * 2**20)
        sampled(timeline)
        del big
        timeline.mark('after')
        sampled(timeline)
        timeline.mark('end')
    peak = timeline.peak()
    assert peak['after'] == ['before', 'big']
    assert peak['mb'] > timeline.samples[0][1] + 200
    marks = {name: t - timeline.events[0][0] for t, name in timeline.events}
    assert marks['big'] <= peak['at_s'] <= marks['after'] <= peak['of_s']


def test_gpu_check_runs_every_section_on_cpu(tmp_path):
    """``gpu_check.py --device cpu --quick``: every section runs at toy
    sizes (the CUDA-only one says so), the checks pass, the JSON holds the
    cost table with ratios to full fine-tuning."""
    out = tmp_path / 'gpu_check.json'
    log = run_tool('tools/analysis/gpu_check.py', '--device', 'cpu',
                   '--quick', '--json', str(out), timeout=900)
    for section in ('mslora_cuda_vs_cpu', 'triton_kernels',
                    'cost_table_compiled'):
        assert f'SKIP {section}' in log and 'needs CUDA' in log, section
    assert 'SKIP triton_vs_stock' in log and 'TRITON_INTERPRET=1' in log
    for section in ('amp_train_steps', 'frozen_layers_vs_stock',
                    'window_attention_backends', 'ddp_step', 'graph_breaks',
                    'cost_table', 'cost_table_swin', 'inference'):
        assert f'PASS {section}' in log, log[-3000:]
    result = json.loads(out.read_text())
    assert result['graph_breaks']['breaks'] == 0
    modes = {'full', 'floor', 'mslora', 'lora_r16'}  # no Triton here
    for section, extra in (('cost_table', {
            'mslora_channels_last', 'mslora_no_cp', 'mslora_band_rows'}),
            ('cost_table_swin', set())):
        table = result[section]['table']
        assert set(table) == {'fp32', 'amp'}
        for rows in table.values():
            assert set(rows) == modes | extra, section
        assert result[section]['problems'] == []
    for backbone in ('resnet50', 'swin_t'):
        rows = result['inference']['table'][backbone]
        assert set(rows) == {'frozen', 'mslora'}
        assert rows['frozen']['time_vs_frozen'] == 1.0
        assert rows['mslora']['time_vs_frozen'] == \
            rows['mslora']['forward_s'] / rows['frozen']['forward_s']


def test_gpu_check_triton_section_dry_runs_in_the_interpreter(tmp_path):
    """The device command's correctness section on the CPU under
    ``TRITON_INTERPRET=1`` (toy shapes of ResNet-50's and Swin-T's
    adapters): every dtype within its bound of the fp64 stock path."""
    out = tmp_path / 'triton.json'
    log = run_tool('tools/analysis/gpu_check.py', '--device', 'cpu',
                   '--quick', '--sections', 'triton_vs_stock', '--json',
                   str(out), env=dict(os.environ, TRITON_INTERPRET='1'))
    assert 'PASS triton_vs_stock' in log, log[-3000:]
    errors = json.loads(out.read_text())['triton_vs_stock']['max_rel_error']
    assert set(errors) == {f'{shape}_{dtype}' for shape in (
        'r50_stage1', 'r50_stage2', 'swin_t_stage1')
        for dtype in ('float32', 'float16', 'bfloat16')}
    for name, row in errors.items():
        assert row['triton'] < (1e-4 if 'float32' in name else 6e-2), name


def test_gpu_check_ddp_step_frees_ddp_before_destroying_its_group(monkeypatch):
    """DDP's reducer holds the gloo group: freed after
    ``destroy_process_group`` (at the section's return, the GIL held), the
    group's last reference joined gloo's worker threads while one of them
    waited for the GIL to free a tensor, and ``gpu_check --device cpu`` hung
    in CI. The DDP wrapper is gone when the group is destroyed."""
    import gc

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mslora_mm.analysis.gpu.train_step import ddp_step
    alive_at_destroy = []
    destroy = dist.destroy_process_group

    def recording_destroy(*args, **kwargs):
        alive_at_destroy.append(sum(  # type(), not isinstance(): no warnings
            type(o) is DistributedDataParallel for o in gc.get_objects()))
        return destroy(*args, **kwargs)

    monkeypatch.setattr(dist, 'destroy_process_group', recording_destroy)
    result = ddp_step(torch.device('cpu'), quick=True)
    assert result['ok'] and result['backend'] == 'gloo', result
    assert alive_at_destroy == [0]
    assert not dist.is_initialized()


def test_gpu_check_device_comparison_steps_are_independent_leaves():
    """The CUDA-vs-CPU check runs one step per device from the same input:
    each step's input is a leaf of its own with its own gradient, and the
    caller's tensor is left untouched (a CPU step that made it require
    grad turned the next device's copy into a non-leaf: no gradient)."""
    from mslora_mm.analysis.gpu.numerics import mslora_step
    from mslora_mm.core.runtime import STOCK
    x = torch.randn(2, 64, 6, 5, generator=torch.Generator().manual_seed(0))
    first = mslora_step(x, 'cpu', {}, STOCK)
    assert not x.requires_grad and x.grad is None
    second = mslora_step(x, 'cpu', {}, STOCK)
    assert all(g is not None for g in first + second)
    assert first[1] is not second[1]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gpu_check_cost_table_fails_on_missing_or_inconsistent_figures():
    """The cost table section passes only on a complete, finite, consistent
    table: each defect below is named."""
    from mslora_mm.analysis.gpu.costs import cost_table_problems

    def row(step, memory):
        return dict(forward_s=step / 4, backward_s=step / 2,
                    optimizer_s=step / 4, train_step_s=step,
                    peak_memory_mb=memory, time_vs_full=step / 2.0,
                    memory_vs_full=memory / 100.0)

    def table():
        rows = dict(full=row(2.0, 100.0), mslora=row(1.0, 50.0))
        return dict(fp32=rows, amp=copy.deepcopy(rows))

    modes = ['full', 'mslora']
    assert cost_table_problems(table(), modes, cuda=True) == []
    broken = table()
    del broken['amp']['mslora']
    assert cost_table_problems(broken, modes, True) == ['amp/mslora: missing']
    broken = table()
    broken['fp32']['mslora']['backward_s'] = float('nan')
    assert cost_table_problems(broken, modes, True) == [
        'fp32/mslora: backward_s=nan']
    broken = table()
    broken['fp32']['mslora']['peak_memory_mb'] = None
    assert cost_table_problems(broken, modes, True) == [
        'fp32/mslora: peak_memory_mb=None']
    cpu = table()
    for rows in cpu.values():
        for r in rows.values():
            r['peak_memory_mb'] = r['memory_vs_full'] = None
    assert cost_table_problems(cpu, modes, cuda=False) == []
    broken = table()
    broken['amp']['mslora']['train_step_s'] = 1.5
    assert 'amp/mslora: train_step_s 1.5 != the sum' in cost_table_problems(
        broken, modes, True)[0]
    broken = table()
    broken['fp32']['mslora']['memory_vs_full'] = 0.7
    assert cost_table_problems(broken, modes, True) == [
        "fp32/mslora: memory_vs_full 0.7 != peak_memory_mb / full's"]


def test_benchmark_amp_in_every_mode_of_the_backbone():
    """``--amp --backbone-only``: bf16 autocast here (fp16 with
    AmpOptimWrapper loss scaling on CUDA) in every mode, peft-lora included;
    the steps train (a finite step time in every mode)."""
    modes = ['full', 'frozen', 'mslora', 'floor', 'peft-lora']
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/mask_rcnn_r50_mslora_1x.py', '--img-size', '64',
                   '--iters', '1', '--warmup', '0', '--json', '--amp',
                   '--modes', *modes, '--backbone-only',
                   '--cfg-options', *R18, stdout_only=True)
    result = json.loads(out.strip().splitlines()[-1])
    assert result['amp'] is True and set(result['modes']) == set(modes)
    for mode, r in result['modes'].items():
        # autocast ran: the backbone's output was computed in bf16, and
        # every mode with parameters stepped through the AMP wrapper
        assert r['backbone_dtype'] == 'torch.bfloat16', mode
        trains = mode not in ('frozen', 'floor')
        assert r['optim_wrapper'] == ('CPUAmpOptimWrapper' if trains
                                      else None), mode
        assert r['train_step_s'] > 0 and r['peak_memory_mb'] > 0, mode


def test_adapter_site_costs_profile_every_adapter_and_its_arithmetic():
    """One row per adapter, in forward order, with its feature's shape,
    its rank (capped by ``max_rank_ratio``) and the GFLOP of its
    convolutions: 2 x B x H x W x (3 C D / G + D (9 + 25 + 49) + D^2)."""
    import torch
    import torch.nn as nn

    from mslora_mm.analysis.cost.site_costs import (adapter_site_costs,
                                                    format_site_costs)
    from mslora_mm.core import inject_adapters
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(8, 32, 3, 2, 1))
    inject_adapters(net, ['0', '2'], dict(rank=16, max_rank_ratio=1.0))
    costs = adapter_site_costs(net, torch.randn(2, 3, 32, 32), iters=2)
    assert [(c.site, c.channels, c.rank, c.hw) for c in costs] == [
        ('0', 8, 8, (16, 16)), ('2', 32, 16, (8, 8))]
    for c in costs:
        c_, d, g, hw = c.channels, c.rank, 4, c.hw[0] * c.hw[1]
        macs = 2 * hw * (3 * c_ * d // g + d * 83 + d * d)
        assert c.gflop == pytest.approx(2 * macs / 1e9)
        assert c.step_ms > 0
    assert all(p.grad is None for p in net.parameters())
    table = format_site_costs(costs)
    assert table.splitlines()[2].startswith('| 0 | 8 | 8 | 16 x 16 |')
    assert table.splitlines()[-1].startswith('| all 2 |')


def test_benchmark_per_site_prints_a_row_per_adapter():
    out = run_tool('tools/analysis/benchmark.py',
                   'configs/efficientnet_lite/'
                   'mask_rcnn_efficientnet-lite0_mslora_1x.py', '--per-site',
                   '--img-size', '64', '--iters', '1', '--warmup', '0',
                   stdout_only=True)
    rows = [line for line in out.splitlines()
            if line.startswith('| _blocks.')]
    assert len(rows) == 15
    assert rows[0].startswith('| _blocks.1 | 24 | 24 | 16 x 16 |')
