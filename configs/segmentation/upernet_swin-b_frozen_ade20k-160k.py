# Baseline: the Swin-B (ImageNet-22K) body entirely frozen, no adapters.
_base_ = './upernet_swin-t_frozen_ade20k-160k.py'
checkpoint_file = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth'  # noqa
swin_b = dict(_base_.swin_t, embed_dims=128, depths=[2, 2, 18, 2],
              num_heads=[4, 8, 16, 32],
              init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file))
model = dict(
    backbone=dict(backbone=dict(_delete_=True, **swin_b)),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
