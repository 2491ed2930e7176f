"""MSLoRAResNet / MSLoRASwin: identity at init, freezing, keys, errors."""
import pytest
import torch
import torch.nn as nn

from helpers import randomise_batchnorms, trainable_after_init_and_train
from mmdet.registry import MODELS
from mslora_mm import (FrozenBatchNorm2d, FrozenConv2d, adapter_modules,
                       adapter_parameter_names)
from mslora_mm.core.mslora import is_adapter_key


def plain_and_adapted(plain_cfg: dict, adapted_type: str, **adapter_args):
    plain = MODELS.build(plain_cfg)
    plain.init_weights()
    adapted = MODELS.build(dict(plain_cfg, type=adapted_type, **adapter_args))
    missing, unexpected = adapted.load_state_dict(plain.state_dict(),
                                                  strict=False)
    assert unexpected == []
    assert set(missing) == set(adapter_parameter_names(adapted))
    assert missing, 'no adapters were built'
    plain.eval()  # mmdet backbones' train() returns None
    adapted.eval()
    return plain, adapted


def assert_same_outputs(plain, adapted, x):
    with torch.no_grad():
        for a, b in zip(plain(x), adapted(x)):
            assert torch.equal(a, b)


RESNETS = [
    dict(type='ResNet', depth=18),
    dict(type='ResNet', depth=50),
    dict(type='ResNet', depth=50, style='caffe', out_indices=(1, 3),
         frozen_stages=1, norm_eval=False),
    dict(type='ResNet', depth=50, strides=(1, 2, 2, 1),
         dilations=(1, 1, 1, 2), with_cp=True),
    dict(type='ResNetV1d', depth=50),
    dict(type='ResNeXt', depth=50, groups=32, base_width=4),
    dict(type='ResNet', depth=34, out_indices=(3, )),
]


@pytest.mark.parametrize('cfg', RESNETS)
@pytest.mark.parametrize('position', ['after_conv2', 'after_conv3'])
def test_resnet_identity_at_init(cfg, position):
    plain, adapted = plain_and_adapted(
        cfg, f'MSLoRA{cfg["type"]}', adapter_position=position,
        adapter_cfg=dict(rank=16))
    assert_same_outputs(plain, adapted, torch.randn(1, 3, 64, 64))


def test_resnet_dcn_and_extra_plugins_identity():
    cfg = dict(type='ResNet', depth=50,
               dcn=dict(type='DCN', deform_groups=1, fallback_on_stride=False),
               stage_with_dcn=(False, True, True, True),
               plugins=[dict(cfg=dict(type='ContextBlock', ratio=1. / 4),
                             stages=(False, True, True, True),
                             position='after_conv3')])
    plain, adapted = plain_and_adapted(cfg, 'MSLoRAResNet',
                                       adapter_cfg=dict(rank=8))
    assert_same_outputs(plain, adapted, torch.randn(1, 3, 128, 128))


def test_swin_identity_at_init():
    cfg = dict(type='SwinTransformer', embed_dims=32, depths=(2, 2, 2, 2),
               num_heads=(1, 2, 4, 8), window_size=4, drop_path_rate=0.0)
    plain, adapted = plain_and_adapted(cfg, 'MSLoRASwin',
                                       adapter_cfg=dict(rank=16))
    assert len([k for k in adapted.state_dict() if k.endswith('up.weight')
                ]) == 8
    assert_same_outputs(plain, adapted, torch.randn(2, 3, 64, 64))


def test_sites_and_widths():
    r50 = MODELS.build(dict(type='MSLoRAResNet', depth=50))
    widths = [m.in_channels for _, m in adapter_modules(r50)]
    assert widths == [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3
    r50o = MODELS.build(dict(type='MSLoRAResNet', depth=50,
                             adapter_position='after_conv3'))
    widths = [m.in_channels for _, m in adapter_modules(r50o)]
    assert widths == [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    r18 = MODELS.build(dict(type='MSLoRAResNet', depth=18,
                            adapter_cfg=dict(rank=(16, 32, 64, 128))))
    ranks = [m.rank for _, m in adapter_modules(r18)]
    assert ranks == [16, 16, 32, 32, 64, 64, 128, 128]


@pytest.mark.parametrize('cfg', [
    dict(type='MSLoRAResNet', depth=50),
    dict(type='MSLoRASwin', embed_dims=32, depths=(2, 2, 2, 2),
         num_heads=(1, 2, 4, 8)),
])
def test_train_mode_reaches_adapters_and_stochastic_layers_only(cfg):
    """``train()`` switches the adapters (and the body's dropout/drop-path)
    to training, nothing else; ``train(False)`` everything back. (Which
    parameters train: ``test_trainable_set_is_final_at_construction``.)"""
    model = MODELS.build(cfg)
    model.train()
    from mslora_mm.core.freezing import STOCHASTIC_LAYERS
    inside = {n for n, a in adapter_modules(model)}
    inside |= {f'{a}.{n}' for a, m in adapter_modules(model)
               for n, _ in m.named_modules() if n}
    for name, m in model.named_modules():
        is_adapter = name in inside
        assert m.training == (is_adapter or isinstance(m, STOCHASTIC_LAYERS)), \
            name
    model.train(False)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize('cfg, match', [
    # the preset's own arguments (MSLoRA's are tested in test_mslora.py),
    # and that the adapter's error reaches the user naming its site
    (dict(type='MSLoRAResNet', depth=50, adapter_position='after_conv1'),
     "adapter_position='after_conv1' is unknown"),
    (dict(type='MSLoRAResNet', depth=50, adapter_cfg=dict(rank=(8, 8))),
     'gives 2 ranks for 4 stages'),
    (dict(type='MSLoRASwin', embed_dims=96, adapter_cfg=dict(groups=5)),
     'in_channels=96 at stages.0.blocks.0\\): groups=5 must divide'),
])
def test_bad_arguments_fail_at_build(cfg, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


@pytest.mark.parametrize('cfg', [dict(type='ResNet', depth=50),
                                 dict(type='ResNet', depth=18)])
def test_frozen_batchnorms_keep_trained_statistics(cfg):
    """Every BN and conv of an MSLoRA ResNet's body is a FrozenBatchNorm2d /
    FrozenConv2d; with pretrained (non-trivial) statistics the outputs still
    equal the plain backbone's."""
    plain = MODELS.build(cfg)
    plain.init_weights()
    randomise_batchnorms(plain)
    adapted = MODELS.build(dict(cfg, type=f'MSLoRA{cfg["type"]}',
                                adapter_cfg=dict(rank=8)))
    adapted.load_state_dict(plain.state_dict(), strict=False)
    norms = [m for n, m in adapted.named_modules()
             if 'Norm' in type(m).__name__ and not is_adapter_key(n + '.')]
    assert norms and all(type(m) is FrozenBatchNorm2d for m in norms)
    convs = [m for n, m in adapted.named_modules()
             if isinstance(m, nn.Conv2d) and not is_adapter_key(n + '.')]
    assert convs and all(type(m) is FrozenConv2d for m in convs)
    plain.eval()
    adapted.train()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), adapted(x)):
            # float32 rounding of ~50 affine maps: relative to the map's scale
            assert (b - a).abs().max() <= 1e-5 * a.abs().max(), \
                ((b - a).abs().max(), a.abs().max())


SMALL_SWIN = dict(type='MSLoRASwin', embed_dims=32, depths=(2, 2, 2, 2),
                  num_heads=(1, 2, 4, 8), window_size=4,
                  adapter_cfg=dict(rank=8))
STAGE_PREFIX = {'MSLoRAResNet': 'layer{}.', 'MSLoRASwin': 'stages.{}.'}


@pytest.mark.parametrize('cfg', [dict(type='MSLoRAResNet', depth=18),
                                 dict(type='MSLoRAResNet', depth=50),
                                 SMALL_SWIN])
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 3, 4])
def test_trainable_set_is_final_at_construction(cfg, frozen_stages):
    """DDP registers the trainable parameters right after ``__init__``: the
    set must not change at the first ``train()`` (adapters in frozen stages
    are frozen from construction on, and stay in eval mode)."""
    model = MODELS.build(dict(cfg, frozen_stages=frozen_stages))
    at_init = trainable_after_init_and_train(model)
    # exactly the adapters of the stages that are not frozen
    start = 1 if cfg['type'] == 'MSLoRAResNet' else 0
    frozen_prefixes = tuple(STAGE_PREFIX[cfg['type']].format(start + i)
                            for i in range(max(frozen_stages, 0)))
    assert at_init == {n for n in adapter_parameter_names(model)
                       if not n.startswith(frozen_prefixes)}
    for name, adapter in adapter_modules(model):  # after train()
        assert adapter.training == (not name.startswith(frozen_prefixes)), \
            name


def test_body_dropout_follows_train_mode():
    """Swin's drop-path and dropout act in training as in mmdet (not inside
    frozen stages); normalisation stays frozen; ``body_dropout=False`` turns
    them off."""
    from mslora_mm.core.freezing import STOCHASTIC_LAYERS
    cfg = dict(SMALL_SWIN, drop_path_rate=0.5, drop_rate=0.2, frozen_stages=1)
    model = MODELS.build(cfg)
    x = torch.randn(2, 3, 64, 64)
    model.train()
    stochastic = {n: m.training for n, m in model.named_modules()
                  if isinstance(m, STOCHASTIC_LAYERS)}
    assert any(stochastic.values())
    assert not any(t for n, t in stochastic.items()
                   if n.startswith(('stages.0.', 'patch_embed', 'drop_after')))
    assert not any(m.training for n, m in model.named_modules()
                   if isinstance(m, nn.LayerNorm) and 'mslora' not in n)
    with torch.no_grad():
        assert not torch.equal(model(x)[-1], model(x)[-1])
        model.eval()
        assert torch.equal(model(x)[-1], model(x)[-1])
        off = MODELS.build(dict(cfg, body_dropout=False)).train()
        assert not any(m.training for m in off.modules()
                       if isinstance(m, STOCHASTIC_LAYERS))
        assert torch.equal(off(x)[-1], off(x)[-1])


def test_pretrained_load_says_the_adapters_once_and_other_keys_as_before(
        tmp_path):
    """Loading a plain ResNet checkpoint into MSLoRAResNet: one line counts
    the adapter parameters that start from their initialisation; mmengine's
    missing-keys warning stays for any other key, without adapter keys."""
    from helpers import logged_messages
    from mslora_mm.core.mslora import is_adapter_key
    plain = MODELS.build(dict(type='ResNet', depth=18))
    state = plain.state_dict()
    path = tmp_path / 'r18.pth'
    torch.save(state, path)
    cfg = dict(type='MSLoRAResNet', depth=18, adapter_cfg=dict(rank=8),
               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model = MODELS.build(cfg)
    adapters = [k for k in model.state_dict() if is_adapter_key(k)]
    with logged_messages() as messages:
        model.init_weights()
    said = [m for m in messages if 'adapter parameters' in m]
    assert said == [f'MSLoRAResNet: {len(adapters)} adapter parameters are '
                    'not in the pretrained checkpoint and start from their '
                    'initialisation (the identity), as intended']
    assert not [m for m in messages if 'missing keys' in m]
    torch.testing.assert_close(model.state_dict()['conv1.weight'],
                               state['conv1.weight'])

    del state['layer1.0.conv1.weight']
    torch.save(state, path)
    with logged_messages() as messages:
        MODELS.build(cfg).init_weights()
    warned = [m for m in messages if 'missing keys' in m]
    assert len(warned) == 1
    assert warned[0].split('missing keys in source state_dict: ')[1].strip() \
        == 'layer1.0.conv1.weight'
