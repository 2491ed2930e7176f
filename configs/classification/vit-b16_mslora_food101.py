# ViT-B/16 (mmpretrain, ImageNet-21K -> 1K, frozen) + pre-norm MSLoRA on the
# output of every encoder layer, Food-101; lr 1e-4. The adapter reweights the
# 14x14 patch tokens; the class token passes through unchanged, so the head
# reads the mean patch token (with the class token, the last layer's adapter
# would not reach the output).
_base_ = '../_base_/food101_mslora.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/vit/finetune/vit-base-p16_in21k-pre-3rdparty_ft-64xb64_in1k-384_20210928-98e8652b.pth'  # noqa
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MSLoRABackbone',
        backbone=dict(
            type='VisionTransformer', arch='b', img_size=224, patch_size=16,
            drop_path_rate=0.1, out_type='avg_featmap',
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                          prefix='backbone.')),
        sites=['layers.*'],
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7))),
    neck=None,
    head=dict(type='LinearClsHead', num_classes=101, in_channels=768,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
