# Adding MSLoRA to a backbone this project does not ship a config for, by
# inheritance only: ResNeXt-101 64x4d. `MSLoRAResNeXt` is `ResNeXt` + the
# MSLoRA mixin (see docs/new_backbone.md); every ResNeXt argument applies.
_base_ = '../mask_rcnn_r50_mslora_1x.py'
model = dict(
    backbone=dict(
        type='MSLoRAResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))
