# Food-101 fine-tuning with mmpretrain (the paper's classification setting):
# 224 px, 50 epochs, AdamW, cosine decay after a 20-epoch linear warm-up
# (the paper summary's recipe), batch 256 = 8 GPUs x 32.
# Data (https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/), as
# mmpretrain's Food101 dataset reads it:
#   data/food-101/images/<class>/<id>.jpg
#   data/food-101/meta/{classes,train,test}.txt
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

data_root = 'data/food-101'
data_preprocessor = dict(
    num_classes=101,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(type='Food101', data_root=data_root, split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(type='Food101', data_root=data_root, split='test',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 50
warmup_epochs = 20
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=5)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    constructor='MSLoRAOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, T_max=max_epochs - warmup_epochs,
         convert_to_iter_based=True)
]
auto_scale_lr = dict(base_batch_size=256)
