# ResNet-50 (mmpretrain ImageNet-1K weights, frozen) + MSLoRA after conv2 of
# every Bottleneck (as in detection), Food-101; head trained.
_base_ = '../_base_/food101_mslora.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb32_in1k_20210831-ea4938fc.pth'  # noqa
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MSLoRABackbone',
        backbone=dict(
            type='mmdet.ResNet', depth=50, frozen_stages=-1,
            norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                          prefix='backbone.')),
        plugin_position='after_conv2',
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7))),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=101, in_channels=2048,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)))
