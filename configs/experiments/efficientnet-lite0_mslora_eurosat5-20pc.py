# EuroSAT-5 with 20 training images per class (a fixed draw, seed 0; the
# same validation set): does MSLoRA's advantage grow as data shrinks?
# 20 epochs of batch 20 (100 iterations), evaluated at the end.
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_eurosat5-20pc.py --seeds 2
_base_ = './efficientnet-lite0_mslora_eurosat5-100pc.py'

train_dataloader = dict(batch_size=20, dataset=dict(per_class=20))
train_cfg = dict(max_epochs=20, val_interval=20)
