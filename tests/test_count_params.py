"""count_parameters: the spec's budget numbers."""
from helpers import build_detector
from mmdet.registry import MODELS
from mslora_mm import count_parameters

SWIN_L = dict(type='MSLoRASwin', embed_dims=192, depths=(2, 2, 18, 2),
              num_heads=(6, 12, 24, 48))
SWIN_B = dict(type='MSLoRASwin', embed_dims=128, depths=(2, 2, 18, 2),
              num_heads=(4, 8, 16, 32))


def count(cfg, **adapter):
    return count_parameters(MODELS.build(dict(cfg, adapter_cfg=adapter)))


def test_swin_l_budget():
    g1 = count(SWIN_L, groups=1)
    g4 = count(SWIN_L, groups=4)
    assert g1['adapter_projection'] == 3 * 18048 * 128 + 2 * 128 * 24 + 18048
    assert round(g1['adapter_projection'] / 1e6, 2) == 6.95
    assert round(g4['adapter_projection'] / 1e6, 2) == 1.76
    assert g4['adapter_transformation'] == 24 * 27776
    assert round(g4['adapter_transformation'] / 1e6, 2) == 0.67
    assert g4['adapter_input_norm'] == 2 * 18048
    assert g4['adapter'] == (g4['adapter_projection'] +
                             g4['adapter_transformation'] +
                             g4['adapter_input_norm'])


def test_swin_b_and_r50_percentages():
    b = count(SWIN_B, groups=4)
    assert round(b['backbone_frozen'] / 1e6, 2) == 86.75
    assert 2.0 <= b['adapter_pct_of_backbone'] <= 2.2
    r50 = count(dict(type='MSLoRAResNet', depth=50))
    assert r50['adapter'] == 814784
    assert r50['backbone_frozen'] == 23508032
    assert 3.4 < r50['adapter_pct_of_backbone'] < 3.6
    conv3 = count_parameters(MODELS.build(dict(
        type='MSLoRAResNet', depth=50, adapter_position='after_conv3')))
    assert 1.8e6 < conv3['adapter'] < 2.0e6


def test_detector_roles_add_up():
    model = build_detector(dict(type='MSLoRAResNet', depth=18,
                                adapter_cfg=dict(rank=16)))
    c = count_parameters(model)
    assert c['total'] == sum(p.numel() for p in model.parameters())
    assert c['backbone_frozen'] + c['adapter'] + c['neck'] + c['heads'] == \
        c['total']
    assert c['neck'] == sum(p.numel() for p in model.neck.parameters())
    assert c['trainable'] == c['adapter'] + c['neck'] + c['heads']
    assert isinstance(c['adapter_pct_of_backbone'], float)


def test_count_params_sites_lists_every_adapter_with_its_shape():
    """``count_params.py --sites``: one row per adapter site, in forward
    order, with its channels, rank, groups and parameter count, as built."""
    from helpers import run_tool
    from mslora_mm import adapter_modules
    from mslora_mm.cli import load_config
    config = 'configs/efficientnet_lite/' \
        'mask_rcnn_efficientnet-lite0_mslora_1x.py'
    out = run_tool('tools/analysis/count_params.py', config, '--sites',
                   '--cfg-options', 'model.backbone.backbone.init_cfg=None',
                   stdout_only=True)
    cfg = load_config(config)
    cfg.model.backbone.backbone.init_cfg = None
    backbone = MODELS.build(cfg.model.backbone)
    rows = [line.split() for line in out.splitlines()
            if line.startswith('_blocks.')]
    sites = list(adapter_modules(backbone))
    assert [r[0] for r in rows] == [n.rpartition('.')[0] for n, _ in sites]
    for row, (_, adapter) in zip(rows, sites):
        assert row[1] == f'C={adapter.in_channels}'
        assert row[2] == f'D={adapter.rank}' and row[3] == 'G=4'
        assert int(row[-1].replace(',', '')) == sum(
            p.numel() for p in adapter.parameters())


def test_register_mslora_resnet_on_a_user_subclass():
    """``register_mslora_resnet(MyResNet)``: ``MSLoRAMyResNet`` in the
    registry, the subclass's behaviour kept, adapters at the Bottleneck
    slots, only they train."""
    import torch
    from mmdet.models.backbones import ResNet
    from mslora_mm import adapter_modules, register_mslora_resnet
    from mslora_mm.core.mslora import is_adapter_key

    class WideStemResNet(ResNet):  # a user's subclass: its own argument
        def __init__(self, stem_scale: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.stem_scale = stem_scale

    cls = register_mslora_resnet(WideStemResNet)
    assert cls.__name__ == 'MSLoRAWideStemResNet'
    assert MODELS.get('MSLoRAWideStemResNet') is cls
    model = MODELS.build(dict(type='MSLoRAWideStemResNet', depth=50,
                              stem_scale=2.0, adapter_cfg=dict(rank=8)))
    assert isinstance(model, WideStemResNet) and model.stem_scale == 2.0
    assert len(list(adapter_modules(model))) == 16
    assert all(is_adapter_key(n) for n, p in model.named_parameters()
               if p.requires_grad)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
