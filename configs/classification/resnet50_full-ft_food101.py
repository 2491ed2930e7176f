# Baseline: the same ResNet-50 fully fine-tuned (no adapters), same recipe.
_base_ = './resnet50_mslora_food101.py'
model = dict(backbone=dict(
    _delete_=True, type='ResNet', depth=50,
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}},
                  prefix='backbone.')))
optim_wrapper = dict(frozen_backbone=False)
