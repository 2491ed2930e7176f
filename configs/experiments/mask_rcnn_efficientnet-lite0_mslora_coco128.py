# Mask R-CNN EfficientNet-Lite0-FPN + MSLoRA on real COCO images
# (../shared/data/coco128: 100 train / 28 val), restricted to the two classes
# with enough instances to measure (person 205 train / 49 val, car 32 / 14;
# every other class has at most 14 val instances; 60 train / 20 val images
# hold one), 384x288 inputs. To fit a CPU: fewer proposals, RoIs and test
# detections than COCO's 1x, 128 channels from the FPN on (neck, RPN, RoI
# heads; 256 made every 3x3 conv at stride 4 four times dearer), a light mask
# head (2 convs instead of 4: the standard head alone cost ~6 s of a 7 s
# step here) and a short schedule (16 epochs of 15 iterations, AdamW 1e-3,
# cosine), evaluated every 4 epochs. 8 epochs left the frozen baseline at
# box mAP 0.013 (noise).
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/mask_rcnn_efficientnet-lite0_mslora_coco128.py \
#       --seeds 2
_base_ = '../efficientnet_lite/mask_rcnn_efficientnet-lite0_mslora_1x.py'

data_root = '../shared/data/coco128/'
metainfo = dict(classes=('person', 'car'))
img_scale = (384, 288)
max_epochs = 16
channels = 128

model = dict(
    neck=dict(out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, num_classes=2),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, num_classes=2, num_convs=2,
                       conv_out_channels=channels)),
    # CPU time: fewer proposals and sampled RoIs
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=500),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300),
                  rcnn=dict(max_per_img=50)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=2, batch_sampler=None,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=20),
    dict(type='CosineAnnealingLR', eta_min=0.0, T_max=max_epochs, begin=0,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True)
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
