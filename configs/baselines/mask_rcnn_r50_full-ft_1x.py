# Baseline: plain ResNet-50, fully fine-tuned (stem frozen as in mmdet), on
# the MSLoRA schedule (AdamW 2e-4, cosine).
_base_ = '../mask_rcnn_r50_mslora_1x.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
optim_wrapper = dict(frozen_backbone=False)
