# MSLoRA on ResNet-V1d (deep stem, avg-pool downsampling), by inheritance,
# initialised from mmpretrain's ResNetV1d-50 ImageNet checkpoint.
_base_ = '../mask_rcnn_r50_mslora_1x.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnetv1d50_b32x8_imagenet_20210531-db14775a.pth'  # noqa
model = dict(
    backbone=dict(
        type='MSLoRAResNetV1d',
        init_cfg=dict(
            type='Pretrained', prefix='backbone.', checkpoint=checkpoint)))
