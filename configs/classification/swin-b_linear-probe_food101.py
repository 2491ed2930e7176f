# Baseline: the same Swin-B frozen, only the linear head trained.
_base_ = './swin-b_mslora_food101.py'
model = dict(backbone=dict(
    _delete_=True, type='SwinTransformer', arch='base', img_size=224,
    frozen_stages=3,  # mmpretrain counts from 0: stages 0-3
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}},
                  prefix='backbone.')))
# mmpretrain's Swin freezes its stages at the first train(), after the
# optimizer is built: the constructor's trainable-backbone guard is off (the
# frozen parameters never receive gradients, so AdamW never moves them).
optim_wrapper = dict(frozen_backbone=False)
