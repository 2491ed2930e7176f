# EuroSAT-5 (../shared/data/eurosat5: Sentinel-2 land-cover patches, 64x64,
# 5 classes, 10,400 train / 2,600 val; a real shift from ImageNet photos) on
# the frozen ImageNet EfficientNet-Lite0 + MSLoRA (the shared Lite0
# adapters) with a new 5-class head, at the patches' own 64 px, sized for a
# 2-core CPU: 1 epoch of batch 64 (163 iterations), AdamW 5e-4, cosine.
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_eurosat5.py --seeds 2
# Fewer training images per class (docs/results.md): the -20pc and -100pc
# configs beside this one.
_base_ = '../_base_/efficientnet-lite0_mslora_cls.py'

data_root = '../shared/data/eurosat5'
classes = ('Forest', 'Industrial', 'Pasture', 'Residential', 'River')
data_preprocessor = dict(num_classes=5)
model = dict(data_preprocessor=data_preprocessor,
             head=dict(num_classes=5))
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
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=20))
