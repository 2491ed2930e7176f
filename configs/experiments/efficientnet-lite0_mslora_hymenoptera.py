# Ants vs bees (../shared/data/hymenoptera, 245 train / 153 val real images)
# on the frozen ImageNet EfficientNet-Lite0 + MSLoRA (D=32 on every MBConv
# block) with a new 2-class head: the Food-101 recipe's pipelines and
# optimizer on this data, 3 epochs. Both classes are ImageNet classes: a
# pipeline check, every mode is expected near the ceiling.
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_hymenoptera.py --seeds 2
_base_ = '../_base_/food101_mslora.py'

lite0 = 'checkpoints/efficientnet-lite0_imagenet.pth'
data_root = '../shared/data/hymenoptera'
# the ImageNet weights expect inputs in [-1, 1]
data_preprocessor = dict(num_classes=2, mean=[127.5] * 3, std=[127.5] * 3,
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
    head=dict(type='LinearClsHead', num_classes=2, in_channels=1280,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
train_dataloader = dict(
    batch_size=16, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='train', pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(
    batch_size=32, num_workers=2,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='val', pipeline={{_base_.test_pipeline}}))
val_evaluator = dict(topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 3  # 16 iterations each
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(logger=dict(interval=4),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
