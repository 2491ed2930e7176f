# Faster R-CNN EfficientNet-Lite0-FPN + MSLoRA (the shared Lite0 adapters)
# on NEU-DET (../shared/data/neu-det: steel-surface defects, 200x200 grey
# images, 6 classes, 1,440 train / 360 val, Pascal VOC XML with split files;
# far from ImageNet and COCO), boxes only, COCO-style box mAP@[.5:.95] and
# AP50 (mmdet's CocoMetric on the dataset's own boxes). Any folder of VOC XML
# files works the same way (CheckedXMLDataset: ann_file lists image ids;
# img_subdir / ann_subdir name the image and XML folders).
# Sized for a 2-core CPU (docs/results.md, "Detection"): a profile of the
# earlier step (128 FPN channels, 128 sampled RoIs, 512-wide box head,
# RoIAlign's adaptive sampling) spent 47% of a frozen-body step in mmcv's
# CPU RoIAlign and most of the rest in the neck and heads; the head here
# (64 channels, 64 RoIs an image, 256-wide box head, 2x2 RoIAlign samples)
# steps 3.8x faster. The head is the same in every mode: the backbone is
# what a comparison compares. `epochs` (of 180 iterations of batch 8): the
# frozen body's held-out mAP levels off from epoch 7 of a 10-epoch run
# (faster-rcnn_efficientnet-lite0_frozen_neu-det_schedule.py, its curve in
# docs/results/neu-det/schedule); 6 is what fits the comparison's 30 runs
# in about 4 hours here, the trade docs/results.md states.
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/faster-rcnn_efficientnet-lite0_mslora_neu-det.py \
#       --holdout 0.2 --lr-grid 3e-4 1e-3 3e-3 full=1e-4,3e-4,1e-3 \
#       --mona-dim auto --seeds 3 --out docs/results/neu-det
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
          '../_base_/models/efficientnet-lite0_mslora.py']
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

data_root = '../shared/data/neu-det/'
metainfo = dict(classes=('crazing', 'inclusion', 'patches', 'pitted_surface',
                         'rolled-in_scale', 'scratches'))
img_scale = (160, 160)
channels = 64
epochs = 6
max_iters = epochs * 180  # 1,440 images / batch 8

model = dict(
    data_preprocessor=_base_.lite0_preprocessor,
    backbone=dict(_delete_=True, **_base_.lite0_mslora),
    neck=dict(in_channels=_base_.lite0_channels, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(
            out_channels=channels,
            roi_layer=dict(type='RoIAlign', output_size=7,
                           sampling_ratio=2)),
        bbox_head=dict(in_channels=channels, fc_out_channels=256,
                       num_classes=6)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=500),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300),
                  rcnn=dict(max_per_img=50)))

dataset = dict(type='CheckedXMLDataset', data_root=data_root,
               metainfo=metainfo, data_prefix=dict(sub_data_root=''),
               img_subdir='images', ann_subdir='annotations')
# mmdet's pipelines at img_scale
train_pipeline = [dict(t, scale=img_scale) if t['type'] == 'Resize' else t
                  for t in _base_.train_pipeline]
test_pipeline = [dict(t, scale=img_scale) if t['type'] == 'Resize' else t
                 for t in _base_.test_pipeline]
# and the boxes CocoMetric evaluates against (ann_file=None)
test_pipeline[-1] = dict(
    test_pipeline[-1], meta_keys=test_pipeline[-1]['meta_keys'] + ('instances', ))
train_dataloader = dict(
    batch_size=8, num_workers=2, batch_sampler=None,
    dataset=dict(_delete_=True, ann_file='splits/train.txt',
                 filter_cfg=dict(filter_empty_gt=True),
                 pipeline=train_pipeline, **dataset))
val_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(_delete_=True, ann_file='splits/val.txt', test_mode=True,
                 pipeline=test_pipeline, **dataset))
test_dataloader = val_dataloader
# ann_file=None: CocoMetric evaluates against the dataset's own boxes
val_evaluator = dict(_delete_=True, type='CocoMetric', ann_file=None,
                     metric='bbox', format_only=False)
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop',
                 max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True,
    constructor='MSLoRAOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', eta_min=0.0, T_max=max_iters, begin=0,
         end=max_iters, by_epoch=False)
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=max_iters,
                                     max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
