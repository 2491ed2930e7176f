# Baseline: the same Swin-B fully fine-tuned (no adapters), same recipe.
_base_ = './swin-b_mslora_food101.py'
model = dict(backbone=dict(
    _delete_=True, type='SwinTransformer', arch='base', img_size=224,
    drop_path_rate=0.3,
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}},
                  prefix='backbone.')))
optim_wrapper = dict(frozen_backbone=False)
