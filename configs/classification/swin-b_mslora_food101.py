# Swin-B (mmpretrain, ImageNet-22K -> 1K, frozen) + pre-norm MSLoRA after the
# FFN of every block, Food-101; lr 1e-4 for transformers. The paper's
# headline: 92.9% top-1 with G=4 (2.0% of the backbone).
_base_ = '../_base_/food101_mslora.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/swin-transformer/convert/swin_base_patch4_window7_224_22kto1k-f967f799.pth'  # noqa
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MSLoRABackbone',
        backbone=dict(
            type='SwinTransformer', arch='base', img_size=224,
            drop_path_rate=0.3,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                          prefix='backbone.')),
        sites=['stages.*.blocks.*'],
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7))),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=101, in_channels=1024,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
