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
# the schedulers end with the training (the base leaves their `end` open)
train_cfg = dict(max_epochs=6, val_interval=6)
default_hooks = dict(logger=dict(interval=10))
