# The embedded demo (`make demo`): Mask R-CNN on the frozen ImageNet
# EfficientNet-Lite0 + MSLoRA (mask_rcnn_efficientnet-lite0_mslora_1x.py's
# model) on 128 px images of procedurally drawn shapes, a real domain shift
# from ImageNet. tools/demo.py generates the data and converts the shipped
# Lite0 weights (no download), trains this config and, on the same
# schedule, the frozen-backbone baseline.
_base_ = ['./mask_rcnn_r50_mslora_demo.py',
          '../_base_/models/efficientnet-lite0_mslora.py']

model = dict(
    data_preprocessor=_base_.lite0_preprocessor,
    backbone=dict(_delete_=True, **_base_.lite0_mslora),
    neck=dict(in_channels=_base_.lite0_channels),
    # at most 16 positive RoIs per image: the mask head dominates CPU time
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))))
