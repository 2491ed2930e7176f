# Semantic FPN (a light FPN decode head) on the frozen ImageNet
# EfficientNet-Lite0 + MSLoRA (the shared Lite0 adapters) on CamVid
# (../shared/data/camvid: Cambridge street scenes, 480x360, 11 classes,
# label 11 unlabelled and ignored; 367 train / 101 val / 233 test), sized
# for a 2-core CPU: 240x180 inputs, 64-channel FPN and head, batch 8,
# AdamW 1e-3, poly decay; mIoU / mAcc / aAcc on the 233 test images.
# A folder of images and label PNGs of your own works the same way
# (CheckedSegDataset: class names and ignore_index below, given to the
# dataset, RandomCrop, the data preprocessor's padding, the decode head and
# IoUMetric alike; a missing label file, a label of another size, a value
# outside the classes or a crop/pad left at another ignored value is named).
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/train.py configs/experiments/fpn_efficientnet-lite0_mslora_camvid.py
_base_ = ['mmseg::_base_/default_runtime.py',
          '../_base_/models/efficientnet-lite0_mslora.py']
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

data_root = '../shared/data/camvid'
classes = ('sky', 'building', 'pole', 'road', 'pavement', 'tree',
           'sign/symbol', 'fence', 'car', 'pedestrian', 'bicyclist')
palette = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128],
           [60, 40, 222], [128, 128, 0], [192, 128, 128], [64, 64, 128],
           [64, 0, 128], [64, 64, 0], [0, 128, 192]]
ignore_index = 11
scale = (240, 180)
channels = 64
max_iters = 300

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', **_base_.lite0_preprocessor,
        bgr_to_rgb=True, pad_val=0, seg_pad_val=ignore_index,
        size=(scale[1], scale[0])),
    backbone=_base_.lite0_mslora,
    neck=dict(type='FPN', in_channels=_base_.lite0_channels,
              out_channels=channels, num_outs=4),
    decode_head=dict(
        type='FPNHead', in_channels=[channels] * 4, in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32], channels=channels,
        dropout_ratio=0.1, num_classes=len(classes),
        norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
        ignore_index=ignore_index,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                         loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(1.0, 1.5),
         keep_ratio=True),
    # at most 75% of a crop's labelled pixels one class; label 11 is not one
    dict(type='RandomCrop', crop_size=(scale[1], scale[0]),
         cat_max_ratio=0.75, ignore_index=ignore_index),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')]
dataset = dict(type='CheckedSegDataset', data_root=data_root,
               img_suffix='.jpg', seg_map_suffix='.png',
               metainfo=dict(classes=classes, palette=palette),
               ignore_index=ignore_index)
train_dataloader = dict(
    batch_size=8, num_workers=2, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_prefix=dict(img_path='images/train',
                                  seg_map_path='annotations/train'),
                 pipeline=train_pipeline, **dataset))
val_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(data_prefix=dict(img_path='images/val',
                                  seg_map_path='annotations/val'),
                 pipeline=test_pipeline, **dataset))
test_dataloader = dict(val_dataloader, dataset=dict(
    val_dataloader['dataset'], data_prefix=dict(
        img_path='images/test', seg_map_path='annotations/test')))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'],
                     ignore_index=ignore_index)
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='MSLoRAOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters,
         by_epoch=False)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False,
                    interval=max_iters, max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook'))  # test.py --show-dir
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
