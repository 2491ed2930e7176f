# Baseline: the ResNet-50-V1c body entirely frozen, no adapters (only the
# heads train), on the MSLoRA config's recipe.
_base_ = './upernet_r50_mslora_ade20k-160k.py'
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='FrozenBackbone',
        backbone=dict(
            type='ResNetV1c', depth=50, num_stages=4,
            out_indices=(0, 1, 2, 3), dilations=(1, 1, 1, 1),
            strides=(1, 2, 2, 2),
            norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
            style='pytorch', contract_dilation=True,
            init_cfg=dict(type='Pretrained',
                          checkpoint='open-mmlab://resnet50_v1c'))))
