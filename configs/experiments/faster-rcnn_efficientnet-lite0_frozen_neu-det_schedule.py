# How long the NEU-DET detector must train: the frozen-body baseline (heads
# only) trained on the fit part of the training set (80%, seed 0; the part
# compare_tuning --holdout 0.2 fits on) for 10 x 180 iterations of batch 8,
# its box mAP on the held-out 20% every 180. The schedule is chosen here,
# never on the val images (the comparison's test split). Measured (its
# curve: docs/results/neu-det/schedule): 0.156, 0.159, 0.209, 0.216, 0.244,
# 0.261, 0.288, 0.286, 0.296, 0.294.
#   python tools/train.py \
#       configs/experiments/faster-rcnn_efficientnet-lite0_frozen_neu-det_schedule.py
#   python tools/analysis/plot_curves.py \
#       work_dirs/faster-rcnn_efficientnet-lite0_frozen_neu-det_schedule \
#       --keys loss coco/bbox_mAP coco/bbox_mAP_50 --out curve.png
_base_ = './faster-rcnn_efficientnet-lite0_mslora_neu-det.py'

epochs = 10
max_iters = epochs * 180
plain = _base_.model.backbone.backbone
model = dict(backbone=dict(_delete_=True, type='FrozenBackbone',
                           backbone=plain))
split = dict(type='HoldoutSplit', fraction=0.2, seed=0)
train_dataloader = dict(dataset=dict(
    _delete_=True, dataset=_base_.train_dataloader.dataset, part='fit',
    **split))
val_dataloader = dict(dataset=dict(
    _delete_=True, part='holdout',
    dataset=dict(_base_.train_dataloader.dataset,
                 pipeline=_base_.test_pipeline), **split))
test_dataloader = None
test_evaluator = None
test_cfg = None
train_cfg = dict(max_iters=max_iters, val_interval=180)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', eta_min=0.0, T_max=max_iters, begin=0,
         end=max_iters, by_epoch=False)
]
default_hooks = dict(checkpoint=dict(interval=max_iters),
                     logger=dict(log_metric_by_epoch=False))
