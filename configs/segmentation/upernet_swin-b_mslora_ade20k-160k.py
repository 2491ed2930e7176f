# UperNet Swin-B (ImageNet-22K, window 7) on ADE20K (160k, 512x512) with
# MSLoRA: the Swin-T MSLoRA config's recipe on mmseg's Swin-B settings.
_base_ = './upernet_swin-t_mslora_ade20k-160k.py'
checkpoint_file = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_base_patch4_window7_224_22k_20220317-4f79f7c0.pth'  # noqa
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint_file),
        embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
