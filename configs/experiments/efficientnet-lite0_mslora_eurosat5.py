# EuroSAT-5 (../shared/data/eurosat5: Sentinel-2 land-cover patches, 64x64,
# 5 classes, 10,400 train / 2,600 val; a real shift from ImageNet photos) on
# the frozen ImageNet EfficientNet-Lite0 + MSLoRA (D=32 on every MBConv
# block) with a new 5-class head, at the patches' own 64 px, sized for a
# 2-core CPU: 1 epoch of batch 64 (163 iterations), AdamW 5e-4, cosine.
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_eurosat5.py --seeds 2
# Fewer training images per class (docs/results.md): the -20pc and -100pc
# configs beside this one.
_base_ = '../_base_/food101_mslora.py'

lite0 = 'checkpoints/efficientnet-lite0_imagenet.pth'
data_root = '../shared/data/eurosat5'
classes = ('Forest', 'Industrial', 'Pasture', 'Residential', 'River')
# the ImageNet weights expect inputs in [-1, 1]
data_preprocessor = dict(num_classes=5, mean=[127.5] * 3, std=[127.5] * 3,
                         to_rgb=True)
model = dict(
    type='ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MSLoRABackbone',
        backbone=dict(
            type='EfficientNetLite', out_indices=(7, ),
            init_cfg=dict(type='Pretrained', checkpoint=lite0,
                          prefix='backbone.')),
        sites=['_blocks.*'],
        adapter_cfg=dict(rank=32, groups=4, kernel_sizes=(3, 5, 7))),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=5, in_channels=1280,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
# land cover has no up or left: both flips
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=[0.25, 0.25, 0.25],
         direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_set = dict(type='CustomDataset', data_root=data_root,
                 data_prefix='train', classes=classes,
                 pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=64, num_workers=2, persistent_workers=True,
    dataset=dict(_delete_=True, **train_set))
val_dataloader = dict(
    batch_size=128, num_workers=2, persistent_workers=True,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='val', classes=classes,
                 pipeline=test_pipeline))
val_evaluator = dict(topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 1
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
