# EuroSAT-5 with 100 training images per class (a fixed draw, seed 0; the
# same validation set): does MSLoRA's advantage grow as data shrinks?
# 6 epochs of batch 32 (93 iterations), evaluated at the end.
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_eurosat5-100pc.py --seeds 2
_base_ = './efficientnet-lite0_mslora_eurosat5.py'

train_dataloader = dict(
    batch_size=32,
    dataset=dict(_delete_=True, type='PerClassSubset', per_class=100,
                 dataset={{_base_.train_set}}))
max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0,
         end=max_epochs, T_max=max_epochs, convert_to_iter_based=True)
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
