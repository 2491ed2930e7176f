# Mask R-CNN Swin-T-FPN, COCO 1x, frozen ImageNet-1K Swin-T + MSLoRA after
# the FFN of every block; lr 1e-4 for transformers.
_base_ = '../mask_rcnn_r50_mslora_1x.py'
pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='MSLoRASwin',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        convert_weights=True,
        # blocks keep only their inputs and recompute the frozen forward and
        # the adapter in backward: 0.84x -> 0.64-0.65x full fine-tuning's
        # memory on CPU (docs/benchmarks.md, rounds 3 and 5)
        frozen_with_cp=True,
        # with_cp: as in the R-50 config
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7),
                         with_cp=True),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
