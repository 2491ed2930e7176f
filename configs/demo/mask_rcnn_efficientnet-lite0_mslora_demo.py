# The embedded demo (`make demo`): Mask R-CNN on the frozen ImageNet
# EfficientNet-Lite0 + MSLoRA (mask_rcnn_efficientnet-lite0_mslora_1x.py's
# model) on 128 px images of procedurally drawn shapes, a real domain shift
# from ImageNet. tools/demo.py generates the data and converts the shipped
# Lite0 weights (no download), trains this config and, on the same
# schedule, the frozen-backbone baseline.
_base_ = './mask_rcnn_r50_mslora_demo.py'

lite0 = 'checkpoints/efficientnet-lite0_imagenet.pth'
model = dict(
    data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3),
    backbone=dict(
        _delete_=True,
        type='MSLoRABackbone',
        backbone=dict(
            type='EfficientNetLite',
            out_indices=(1, 2, 4, 6),
            norm_eval=True,
            init_cfg=dict(type='Pretrained', checkpoint=lite0,
                          prefix='backbone.')),
        sites=['_blocks.*'],
        adapter_cfg=dict(rank=32, groups=4, kernel_sizes=(3, 5, 7))),
    neck=dict(in_channels=[24, 40, 112, 320]),
    # at most 16 positive RoIs per image: the mask head dominates CPU time
    train_cfg=dict(rcnn=dict(sampler=dict(num=64))))

