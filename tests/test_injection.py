"""MSLoRABackbone: one injection mechanism for any backbone, from a config.

For ResNet (BasicBlock and Bottleneck), Swin, ConvNeXt, ViT and EfficientNet:
identity at init, only adapters trainable from construction on (every
``frozen_stages``), gradients reach every adapter, the parameter formula of
docs/method.md, plain checkpoints load, a classifier train step runs; the
presets keep the keys and outputs they had before the mechanism existed.
"""
import os
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from helpers import ROOT
from helpers import (FLOAT32_ACROSS_MACHINES,
                     assert_gradients_on_trainable_only,
                     trainable_after_init_and_train, run_tool)
from mmdet.registry import MODELS
from mslora_mm import (adapter_modules, adapter_parameter_names,
                       count_parameters, load_adapter_file,
                       plain_backbone_config)

SWIN = dict(type='SwinTransformer', embed_dims=32, depths=(2, 2, 2, 2),
            num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=0.0)
# name: (plain backbone, site arguments, every frozen_stages value it takes,
#        out channels)
CASES = {
    'resnet18': (dict(type='ResNet', depth=18), dict(sites=['layer*.*']),
                 range(-1, 5), 512),
    'resnet50-plugins': (dict(type='ResNet', depth=50),
                         dict(plugin_position='after_conv2'), range(-1, 5),
                         2048),
    'swin': (SWIN, dict(sites=['stages.*.blocks.*']), range(-1, 5), 256),
    'convnext': (dict(type='mmpretrain.ConvNeXt', arch='tiny',
                      out_indices=(0, 1, 2, 3), drop_path_rate=0.0,
                      gap_before_final_norm=False),
                 dict(sites=['stages.*.*']), range(0, 5), 768),
    'vit': (dict(type='mmpretrain.VisionTransformer', arch='deit-tiny',
                 img_size=64, patch_size=16, out_type='featmap'),
            dict(sites=['layers.*']), range(-1, 13), 192),
    'efficientnet': (dict(type='mmpretrain.EfficientNet', arch='b0',
                          out_indices=(6, )),
                     dict(sites=['layers.[1-5].*']), range(0, 8), 1280),
}


def build_pair(name: str, frozen_stages=None, rank: int = 16):
    plain_cfg, site_args, _, _ = CASES[name]
    if frozen_stages is not None:
        plain_cfg = dict(plain_cfg, frozen_stages=frozen_stages)
    torch.manual_seed(0)
    plain = MODELS.build(plain_cfg)
    adapted = MODELS.build(dict(type='MSLoRABackbone', backbone=plain_cfg,
                                adapter_cfg=dict(rank=rank), **site_args))
    return plain, adapted


def outputs(model, x):
    out = model(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize('name', list(CASES))
def test_identity_keys_and_checkpoint_loading(name, tmp_path):
    plain, adapted = build_pair(name)
    adapters = set(adapter_parameter_names(adapted))
    assert adapters
    # the plain backbone's keys, no prefix, plus the adapters'
    keys = set(adapted.state_dict())
    assert {k for k in keys if '.mslora.' not in k} == set(plain.state_dict())
    # a plain detector/classifier checkpoint loads through init_cfg
    ckpt = tmp_path / 'plain.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               plain.state_dict().items()}}, ckpt)
    cfg = CASES[name][0]
    loaded = MODELS.build(dict(
        type='MSLoRABackbone', adapter_cfg=dict(rank=16), **CASES[name][1],
        backbone=dict(cfg, init_cfg=dict(type='Pretrained', prefix='backbone.',
                                         checkpoint=str(ckpt)))))
    loaded.init_weights()
    missing, unexpected = loaded.load_state_dict(plain.state_dict(),
                                                 strict=False)
    assert unexpected == [] and set(missing) == {
        k for k in loaded.state_dict() if '.mslora.' in k}
    for k, v in plain.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    plain.eval()
    loaded.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(outputs(plain, x), outputs(loaded, x)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list(CASES))
def test_only_adapters_train_from_construction(name):
    """For every frozen_stages: the trainable set is final at __init__,
    is adapters only, and adapters freeze with their stage (their host
    module is frozen in the plain backbone with the same frozen_stages)."""
    for frozen_stages in CASES[name][2]:
        plain, adapted = build_pair(name, frozen_stages)
        plain.train()
        at_init = trainable_after_init_and_train(adapted)
        plain_modules = dict(plain.named_modules())
        expected = set()
        for site, adapter in adapter_modules(adapted):
            host = site.rsplit('.', 1)[0]  # the adapted module
            host_params = list(plain_modules[host].parameters())
            if any(p.requires_grad for p in host_params):
                expected |= {f'{site}.{n}' for n, _ in
                             adapter.named_parameters()}
        assert at_init == expected, (frozen_stages,
                                     sorted(at_init ^ expected)[:5])


@pytest.mark.parametrize('name', list(CASES))
def test_gradients_and_parameter_formula(name):
    _, adapted = build_pair(name, rank=16)
    for n in adapter_parameter_names(adapted):
        nn.init.normal_(adapted.get_parameter(n), std=0.02)
    adapted.train()
    x = torch.randn(2, 3, 64, 64)
    sum(o.float().square().mean() for o in outputs(adapted, x)).backward()
    assert_gradients_on_trainable_only(adapted)
    # docs/method.md: projection 3CD/G + 2D + C, transformation
    # sum_k (k^2 D + D) + 2D + D^2 + D, input norm 2C (token sites)
    d, g = 16, 4
    expected = 0
    for _, a in adapter_modules(adapted):
        c = a.in_channels
        expected += 3 * c * d // g + 2 * d + c
        expected += sum(k * k * d + d for k in (3, 5, 7)) + 2 * d + d * d + d
        expected += 2 * c if a.pre_norm else 0
    assert count_parameters(adapted)['adapter'] == expected


def test_vit_class_token_passes_through():
    """The class token is not a pixel: the adapter leaves it unchanged and
    reweights the patch tokens only."""
    _, vit = build_pair('vit')
    for n in adapter_parameter_names(vit):
        nn.init.normal_(vit.get_parameter(n), std=0.05)
    layer = vit.layers[0]
    tokens = torch.randn(2, 1 + 16, 192)
    vit.eval()
    with torch.no_grad():
        vit.patch_embed(torch.zeros(1, 3, 64, 64))  # sets the 4x4 grid
        out = layer(tokens)
        layer.mslora.up.weight.zero_()
        layer.mslora.up.bias.zero_()
        base = layer(tokens)
    assert torch.equal(out[:, 0], base[:, 0])
    assert not torch.allclose(out[:, 1:], base[:, 1:])


@pytest.mark.parametrize('sites, match', [
    (['stages.*.blocks.*.nope'],
     r"pattern 'stages.\*.blocks.\*.nope' matches no module.*candidates: "
     r'.*stages.0.blocks.0'),
    (['stages.*'], r"adapter site 'stages.0' returns tuple, not a \(B, C, H, "
     r'W\) map.*stages.0.blocks'),
])
def test_bad_sites_fail_at_construction(sites, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='MSLoRABackbone', backbone=SWIN, sites=sites))


def test_presets_keep_keys_and_outputs_of_before():
    """MSLoRAResNet (BasicBlock, Bottleneck) and MSLoRASwin, now presets of
    the shared mechanism, and an MSLoRABackbone: the adapter-v1 files and
    outputs earlier code produced (tests/fixtures/presets_v1) load and
    reproduce: keys and shapes exactly, values within float32 tolerance
    (the fixtures were computed on another CPU, whose kernels may take
    other instruction paths: measured differences 1e-7 to 1.4e-6)."""
    sys.path.insert(0, osp.join(ROOT, 'tests', 'fixtures'))
    from make_preset_fixtures import HERE, PRESETS, build, probe_input
    for name, cfg in PRESETS.items():
        model = build(cfg)
        holder = nn.Module()
        holder.backbone = model
        load_adapter_file(holder, osp.join(HERE, f'{name}.safetensors'))
        expected = load_file(osp.join(HERE, f'{name}_outputs.safetensors'))
        with torch.no_grad():
            for i, out in enumerate(model(probe_input())):
                torch.testing.assert_close(out, expected[f'out{i}'],
                                           **FLOAT32_ACROSS_MACHINES,
                                           msg=f'{name} output {i}')


def test_presets_reproduce_on_another_cpu_path():
    """The fixtures reproduce when PyTorch's CPU kernels take another
    instruction path (``ATEN_CPU_CAPABILITY=default``: what another machine
    does), as the suite must on every machine."""
    env = dict(os.environ, ATEN_CPU_CAPABILITY='default')
    run_tool(sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
             'tests/test_injection.py::'
             'test_presets_keep_keys_and_outputs_of_before', env=env)


def test_generic_path_equals_presets():
    """The presets and MSLoRABackbone with the same sites are one thing."""
    pairs = [
        (dict(type='MSLoRAResNet', depth=18, adapter_cfg=dict(rank=8)),
         dict(backbone=dict(type='ResNet', depth=18), sites=['layer*.*'])),
        (dict(type='MSLoRAResNet', depth=50, adapter_cfg=dict(rank=8)),
         dict(backbone=dict(type='ResNet', depth=50),
              plugin_position='after_conv2')),
        (dict(SWIN, type='MSLoRASwin', adapter_cfg=dict(rank=8)),
         dict(backbone=SWIN, sites=['stages.*.blocks.*'])),
    ]
    x = torch.randn(1, 3, 64, 64)
    for preset_cfg, generic_args in pairs:
        preset = MODELS.build(preset_cfg)
        generic = MODELS.build(dict(type='MSLoRABackbone',
                                    adapter_cfg=dict(rank=8), **generic_args))
        for n in adapter_parameter_names(preset):
            nn.init.normal_(preset.get_parameter(n), std=0.05)
        assert generic.load_state_dict(preset.state_dict()).missing_keys == []
        assert plain_backbone_config(preset_cfg)['type'] == \
            generic_args['backbone']['type']
        preset.eval()
        generic.eval()
        with torch.no_grad():
            for a, b in zip(preset(x), generic(x)):
                assert torch.equal(a, b)


@pytest.mark.parametrize('name', ['convnext', 'vit', 'efficientnet'])
def test_classifier_train_step(name):
    """mmpretrain's ImageClassifier around an MSLoRABackbone: a step trains
    the adapters and the head, nothing else."""
    from mmpretrain.structures import DataSample
    plain_cfg, site_args, _, channels = CASES[name]
    backbone = dict(type='MSLoRABackbone', backbone=plain_cfg,
                    adapter_cfg=dict(rank=16), **site_args)
    if name == 'vit':
        # pooled patch tokens: with out_type='cls_token' the last block's
        # adapter (patch tokens only) would not reach the output
        backbone['backbone'] = dict(plain_cfg, out_type='avg_featmap')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS as CLS_MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = CLS_MODELS.build(dict(
            type='ImageClassifier', backbone=backbone,
            neck=None if name == 'vit' else dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=2,
                      in_channels=channels,
                      loss=dict(type='CrossEntropyLoss'))))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    samples = [DataSample().set_gt_label(i) for i in (0, 1)]
    for _ in range(2):
        loss = model(x, samples, mode='loss')['loss']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    adapters = {f'backbone.{n}' for n in
                adapter_parameter_names(model.backbone)}
    for key, value in model.state_dict().items():
        changed = not torch.equal(before[key], value)
        if key.startswith('backbone.') and key not in adapters:
            assert not changed, f'frozen {key} changed'
        if key in adapters or key.startswith('head.'):
            assert changed, f'{key} did not train'


@pytest.mark.parametrize('name', ['resnet18', 'swin', 'convnext'])
def test_frozen_backbone_is_the_plain_one_frozen(name):
    """FrozenBackbone (compare_tuning's `frozen` mode): the plain backbone's
    keys and outputs, nothing trainable, frozen in train() too."""
    plain_cfg = CASES[name][0]
    torch.manual_seed(0)
    plain = MODELS.build(plain_cfg)
    plain.eval()
    frozen = MODELS.build(dict(type='FrozenBackbone', backbone=plain_cfg))
    assert frozen.state_dict().keys() == plain.state_dict().keys()
    frozen.load_state_dict(plain.state_dict())
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not list(adapter_modules(frozen))
    frozen.train()  # only dropout and drop-path follow train()
    from mslora_mm.core.freezing import STOCHASTIC_LAYERS
    assert not any(m.training for m in frozen.modules()
                   if not isinstance(m, STOCHASTIC_LAYERS))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(outputs(plain, x), outputs(frozen, x)):
            torch.testing.assert_close(a, b)
    assert plain_backbone_config(
        dict(type='FrozenBackbone', backbone=plain_cfg)) == plain_cfg


@pytest.mark.parametrize('name', ['resnet18', 'resnet50-plugins', 'swin',
                                  'vit'])
def test_disable_and_remove_adapters(name):
    """disable_adapters: the plain backbone's outputs inside, the adapted
    ones again after; remove_adapters: no adapter left, the plain class,
    keys and outputs."""
    from mslora_mm import disable_adapters, remove_adapters
    plain, adapted = build_pair(name)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    for _, adapter in adapter_modules(adapted):
        nn.init.normal_(adapter.up.weight, std=0.1)
    plain.eval()
    adapted.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = outputs(plain, x)
        on = outputs(adapted, x)
        assert any((a - b).abs().max() > 1e-3 for a, b in zip(on, expected))
        with disable_adapters(adapted) as model:
            for a, b in zip(outputs(model, x), expected):
                torch.testing.assert_close(a, b)
        for a, b in zip(outputs(adapted, x), on):
            torch.testing.assert_close(a, b)
        assert remove_adapters(adapted) is adapted
        assert not list(adapter_modules(adapted))
        assert type(adapted) is type(plain)
        assert [type(m) for m in adapted.modules()] == \
            [type(m) for m in plain.modules()]
        assert adapted.state_dict().keys() == plain.state_dict().keys()
        for a, b in zip(outputs(adapted, x), expected):
            torch.testing.assert_close(a, b)
    adapted.train()  # the plain class's train(), e.g. BN in train mode
    plain.train()
    assert [m.training for m in adapted.modules()] == \
        [m.training for m in plain.modules()]


@pytest.mark.parametrize('name', ['resnet18', 'resnet50-plugins', 'swin'])
def test_disabled_adapters_compute_nothing(name, monkeypatch):
    """While disabled, no adapter computes (a spy on the mathematics) and
    the outputs equal the removed model's; a user's own hook on a host
    survives remove_adapters (hooks are removed by their handles)."""
    from mslora_mm import MSLoRA, disable_adapters, remove_adapters
    _, adapted = build_pair(name)
    for _, adapter in adapter_modules(adapted):
        nn.init.normal_(adapter.up.weight, std=0.1)
    adapted.eval()
    calls = []
    residual = MSLoRA.residual
    monkeypatch.setattr(MSLoRA, 'residual',
                        lambda self, *a: calls.append(1) or
                        residual(self, *a))
    host = next(n for n, _ in adapter_modules(adapted)).rpartition('.')[0]
    seen = []
    adapted.get_submodule(host).register_forward_hook(
        lambda *args: seen.append(1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs(adapted, x)
        assert calls
        calls.clear()
        with disable_adapters(adapted):
            disabled = outputs(adapted, x)
        assert calls == []
        remove_adapters(adapted)
        seen.clear()
        for a, b in zip(disabled, outputs(adapted, x)):
            torch.testing.assert_close(a, b)
    assert seen == [1]  # the user's hook is still there, run once


@pytest.mark.parametrize('name', ['resnet50-plugins', 'convnext', 'vit'])
def test_adapted_backbones_pickle_and_deepcopy(name, tmp_path):
    """MSLoRA<X> made for any backbone class pickles (in this process and
    in a fresh one, which never made the class) and deep-copies: outputs
    equal."""
    import copy
    import pickle
    _, adapted = build_pair(name)
    for _, adapter in adapter_modules(adapted):
        nn.init.normal_(adapter.up.weight, std=0.1)
    adapted.eval()
    x = torch.randn(1, 3, 64, 64)
    data = pickle.dumps(adapted)
    with torch.no_grad():
        expected = outputs(adapted, x)
        for clone in (pickle.loads(data), copy.deepcopy(adapted)):
            assert type(clone) is type(adapted)
            for a, b in zip(outputs(clone, x), expected):
                torch.testing.assert_close(a, b)
    path = tmp_path / 'model.pkl'
    path.write_bytes(data)
    script = ('import pickle, sys, torch\n'
              "model = pickle.load(open(sys.argv[1], 'rb'))\n"
              'print(type(model).__name__, sum(o.float().sum().item() for o in'
              ' (lambda y: y if isinstance(y, (tuple, list)) else [y])('
              'model(torch.zeros(1, 3, 64, 64)))))\n')
    out = run_tool(sys.executable, '-c', script, str(path), timeout=300,
                   stdout_only=True)
    # the last line: the kernel's first load is logged before it
    assert out.splitlines()[-1].split()[0] == type(adapted).__name__
