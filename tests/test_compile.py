"""torch.compile and torch.export of MSLoRA backbones: the native kernel is
a PyTorch custom operator (``torch.ops.mslora.multiscale_branches``), so
dynamo traces a train step in one graph and export keeps the kernel."""
import copy
import os
import os.path as osp

import pytest
import torch

from helpers import (FLOAT32_ACROSS_MACHINES, ROOT, hymenoptera_config, in_ci,
                     run_tool, shared_data)
from mmdet.registry import MODELS
from mslora_mm import adapter_modules
from mslora_mm.core.ops import kernel_available
from mslora_mm.core.runtime import DEVICE_DEFAULTS, runtime

R50 = dict(type='MSLoRAResNet', depth=50,
           adapter_cfg=dict(rank=32, with_cp=True))
CONVNEXT = dict(type='MSLoRABackbone', sites=['stages.*.*'],
                adapter_cfg=dict(rank=16, with_cp=True),
                backbone=dict(type='mmpretrain.ConvNeXt', arch='atto',
                              out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                              gap_before_final_norm=False))
# under CI the kernel must build: the tests run (and fail) without it
needs_kernel = pytest.mark.skipif(not in_ci() and not kernel_available(),
                                  reason='the native kernel cannot be built')


def nonzero_adapters(model):
    torch.manual_seed(1)
    for _, adapter in adapter_modules(model):
        torch.nn.init.normal_(adapter.up.weight, std=0.05)
    return model


def train_loss(model):
    """The compiled part of a train step: forward and loss (AOT autograd
    makes its backward)."""
    def loss(x):
        return sum(o.square().mean() for o in model(x))
    return loss


@needs_kernel
def test_train_step_is_one_graph_without_breaks():
    """``torch._dynamo.explain`` of a ResNet-50 MSLoRA train step with the
    recompute and the CPU's runtime (the kernel included): 1 graph, 0
    breaks."""
    import torch._dynamo
    model = nonzero_adapters(MODELS.build(R50)).train()
    torch._dynamo.reset()
    with runtime(**DEVICE_DEFAULTS['cpu']):
        explained = torch._dynamo.explain(train_loss(model))(
            torch.randn(1, 3, 64, 64))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@needs_kernel
@pytest.mark.parametrize('cfg', [R50, CONVNEXT], ids=['resnet50', 'convnext'])
def test_compiled_train_step_equals_eager(cfg):
    """The compiled step (dynamo + AOT autograd, which runs the kernel's
    fake and autograd registrations) gives eager's loss and adapter
    gradients."""
    eager = nonzero_adapters(MODELS.build(cfg)).train()
    compiled_model = copy.deepcopy(eager)
    x = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    step = torch.compile(train_loss(compiled_model), backend='aot_eager',
                         fullgraph=True)
    losses = [train_loss(eager)(x), step(x)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], **FLOAT32_ACROSS_MACHINES)
    grads = [{n: p.grad for n, p in m.named_parameters() if p.requires_grad}
             for m in (eager, compiled_model)]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6,
                                   msg=name)


@needs_kernel
def test_export_of_an_eval_backbone_keeps_the_kernel():
    model = nonzero_adapters(MODELS.build(dict(
        type='MSLoRAResNet', depth=18, adapter_cfg=dict(rank=16))))
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x, ))
    ops = {str(n.target) for n in exported.graph.nodes
           if n.op == 'call_function'}
    assert 'mslora.multiscale_branches.default' in ops, sorted(ops)[:20]
    with torch.no_grad():
        for a, b in zip(exported.module()(x), model(x)):
            torch.testing.assert_close(a, b, **FLOAT32_ACROSS_MACHINES)


@pytest.mark.slow
def test_mmengine_compile_option_trains(tmp_path):
    """An MSLoRA config trains through mmengine's own ``compile`` option
    (with the aot_eager backend, which needs no C++ build of the graph):
    the R-18 Food-101 classifier on 64 px ants and bees, one iteration (a
    detector's train step compiles the same backbone, plus 100 s of mmdet's
    data-dependent heads)."""
    cfg = hymenoptera_config(
        tmp_path, 'configs/classification/resnet50_mslora_food101.py',
        shared_data('hymenoptera'), max_iters=1,
        backbone=dict(depth=18, zero_init_residual=False),
        adapters=dict(plugin_position=None, sites=['layer4.*'],
                      adapter_cfg=dict(rank=16, with_cp=True)),
        head=dict(in_channels=512))
    with open(cfg, 'a') as f:
        f.write("compile = dict(backend='aot_eager')\n"
                "custom_imports = dict(imports=['mslora_mm', 'e2e_hooks'], "
                "allow_failed_imports=False)\n"
                "custom_hooks = [dict(type='mmdet.CompiledFramesHook')]\n")
    out = run_tool('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'),
                   env=dict(os.environ, PYTHONPATH=osp.join(ROOT, 'tests')))
    assert 'Iter(train) [1/1]' in out, out[-3000:]
    # dynamo compiled the train step (not a silent fallback to eager)
    line = [ln for ln in out.splitlines() if ln.startswith('COMPILED')][-1]
    counts = dict(kv.split('=') for kv in line.split()[1:])
    assert int(counts['frames_ok']) >= 1 and int(counts['graphs']) >= 1, line
    # and its backward and optimizer step moved the adapters off the identity
    state = torch.load(tmp_path / 'w' / 'iter_1.pth',
                       weights_only=True)['state_dict']
    ups = [v for k, v in state.items() if k.endswith('up.weight')]
    assert ups and all(v.abs().sum() > 0 for v in ups)
