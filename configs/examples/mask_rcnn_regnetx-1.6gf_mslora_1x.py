# Worked example (docs/new_backbone.md): MSLoRA on a backbone with no preset,
# mmpretrain's RegNetX-1.6GF, from the config alone. Sites: the output of
# every block of the four stages (layer1.0, layer1.1, ..., layer4.*).
_base_ = '../mask_rcnn_r50_mslora_1x.py'
custom_imports = dict(
    imports=['mslora_mm', 'mmpretrain.models'], allow_failed_imports=False)
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/regnet/regnetx-1.6gf_8xb128_in1k_20211213-d1b89758.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='MSLoRABackbone',
        backbone=dict(
            type='mmpretrain.RegNet', arch='regnetx_1.6gf',
            out_indices=(0, 1, 2, 3), norm_eval=True,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                          prefix='backbone.')),
        sites=['layer*.*'],
        adapter_cfg=dict(rank=64, groups=4, kernel_sizes=(3, 5, 7),
                         with_cp=True)),
    neck=dict(in_channels=[72, 168, 408, 912]))
