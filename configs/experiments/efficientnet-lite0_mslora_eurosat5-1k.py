# EuroSAT-5, VTAB-1k style: 1,000 training images (200 per class, one
# seeded draw, PerClassSubset seed 0) resized from 64 to `size` as VTAB
# resizes every task; the 2,600 val images are the untouched test split.
# The fair comparison (docs/results.md), resumable from its committed
# results:
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
#   python tools/analysis/compare_tuning.py \
#       configs/experiments/efficientnet-lite0_mslora_eurosat5-1k.py \
#       --holdout 0.2 --lr-grid 3e-4 1e-3 3e-3 1e-2 3e-2 \
#       lora=3e-4,1e-3,3e-3,1e-2 frozen=1e-3,3e-3,1e-2,3e-2,1e-1 \
#       full=3e-5,1e-4,3e-4,1e-3 \
#       --mona-dim auto --seeds 5 \
#       --out docs/results/eurosat5-1k
# 3 epochs of batch 32 (96 iterations): the budget of docs/results.md (a
# 224 px train step here: 0.05-0.1 s an image by mode)
_base_ = './efficientnet-lite0_mslora_eurosat5.py'

size = 224
resize = dict(type='Resize', scale=(size, size), backend='pillow')
train_pipeline = [
    dict(type='LoadImageFromFile'), resize,
    dict(type='RandomFlip', prob=[0.25, 0.25, 0.25],
         direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), resize,
                 dict(type='PackInputs')]
# BatchNorm statistics stay the pretrained ones in every mode (the adapter
# modes freeze them with the body; norm_eval for full fine-tuning)
model = dict(backbone=dict(backbone=dict(norm_eval=True)))
train_dataloader = dict(
    batch_size=32,
    dataset=dict(_delete_=True, type='PerClassSubset', per_class=200, seed=0,
                 dataset=dict(_base_.train_set,
                              pipeline=train_pipeline)))
val_dataloader = dict(batch_size=64,
                      dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# the schedulers end with the training (the base leaves their `end` open)
train_cfg = dict(max_epochs=3, val_interval=3)
default_hooks = dict(logger=dict(interval=10))
