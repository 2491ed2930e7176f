# Baseline: frozen ResNet-50 without adapters (only neck and heads train).
_base_ = './mask_rcnn_r50_full-ft_1x.py'
model = dict(backbone=dict(frozen_stages=4))
optim_wrapper = dict(frozen_backbone=True)
