# Mask R-CNN ConvNeXt-T-FPN, COCO 1x: mmpretrain's ImageNet-1K ConvNeXt-T, built
# as mmdet's ConvNeXt Mask R-CNN configs build it, frozen, with a pre-norm
# MSLoRA on the output of every ConvNeXt block, through MSLoRABackbone (no
# preset class: sites are declared).
_base_ = '../mask_rcnn_r50_mslora_1x.py'
custom_imports = dict(
    imports=['mslora_mm', 'mmpretrain.models'], allow_failed_imports=False)
checkpoint_file = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='MSLoRABackbone',
        backbone=dict(
            type='mmpretrain.ConvNeXt',
            arch='tiny',
            out_indices=[0, 1, 2, 3],
            drop_path_rate=0.4,
            layer_scale_init_value=1.0,
            gap_before_final_norm=False,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file,
                          prefix='backbone.')),
        # the (B, C, H, W) output of every block of stages 0-3
        sites=['stages.*.*'],
        # ConvNeXt blocks are pre-norm: LN_in as for Swin/ViT
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7),
                         pre_norm=True, with_cp=True)),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
