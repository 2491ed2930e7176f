# Baseline: the same ViT-B/16 fully fine-tuned (no adapters), same recipe.
_base_ = './vit-b16_mslora_food101.py'
model = dict(backbone=dict(
    _delete_=True, type='VisionTransformer', arch='b', img_size=224,
    patch_size=16, drop_path_rate=0.1, out_type='avg_featmap',
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}},
                  prefix='backbone.')))
optim_wrapper = dict(frozen_backbone=False)
