# Baseline: the same ResNet-50 frozen, only the linear head trained.
_base_ = './resnet50_mslora_food101.py'
model = dict(backbone=dict(
    _delete_=True, type='ResNet', depth=50, frozen_stages=4, norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}},
                  prefix='backbone.')))
