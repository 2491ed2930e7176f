# Baseline: the Swin-T body entirely frozen, no adapters (only the heads
# train), on the MSLoRA config's recipe.
_base_ = './upernet_swin-t_mslora_ade20k-160k.py'
swin_t = dict(
    type='SwinTransformer', pretrain_img_size=224, embed_dims=96,
    patch_size=4, window_size=7, mlp_ratio=4, depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24], strides=(4, 2, 2, 2), out_indices=(0, 1, 2, 3),
    qkv_bias=True, qk_scale=None, patch_norm=True, drop_rate=0.,
    attn_drop_rate=0., drop_path_rate=0.3, use_abs_pos_embed=False,
    act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint=_base_.checkpoint_file))
model = dict(backbone=dict(_delete_=True, type='FrozenBackbone',
                           backbone=swin_t))
