# Baseline: the same ViT-B/16 frozen, only the linear head trained.
_base_ = './vit-b16_mslora_food101.py'
model = dict(backbone=dict(
    _delete_=True, type='VisionTransformer', arch='b', img_size=224,
    patch_size=16, frozen_stages=12, out_type='avg_featmap',
    init_cfg=dict(type='Pretrained', checkpoint={{_base_.checkpoint}},
                  prefix='backbone.')))
