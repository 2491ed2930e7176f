# Ants vs bees (../shared/data/hymenoptera, 245 train / 153 val real images)
# on the frozen ImageNet EfficientNet-Lite0 + MSLoRA (the shared Lite0
# adapters) with a new 2-class head: the Food-101 recipe's pipelines and
# optimizer on this data, 3 epochs. Both classes are ImageNet classes: a
# pipeline check, every mode is expected near the ceiling.
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_hymenoptera.py --seeds 2
_base_ = '../_base_/efficientnet-lite0_mslora_cls.py'

data_root = '../shared/data/hymenoptera'
data_preprocessor = dict(num_classes=2)
model = dict(data_preprocessor=data_preprocessor,
             head=dict(num_classes=2))
train_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='train', pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=32, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='val', pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=3)  # 16 iterations each
param_scheduler = [  # a shorter warm-up: 48 iterations in all
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0,
         convert_to_iter_based=True)
]
default_hooks = dict(logger=dict(interval=4))
