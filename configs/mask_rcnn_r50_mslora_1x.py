# Mask R-CNN R-50-FPN, COCO 1x, frozen torchvision ResNet-50 + MSLoRA
# (D=128, G=4, kernels 3/5/7 after conv2 of every Bottleneck).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='MSLoRAResNet',
        frozen_stages=-1,  # adapters in every stage; the body is frozen
        # with_cp: recompute each adapter's maps in backward (-0.8 GB at
        # 2x512^2). Memory layout, row bands and the native CPU kernel are
        # runtime settings, chosen per device (docs/method.md)
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7),
                         with_cp=True),
        adapter_position='after_conv2'))

# mmdet's CocoDataset + up-front checks (missing images, degenerate annotations)
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='CosineAnnealingLR', eta_min=0.0, T_max=max_epochs, begin=0,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True)
]
optim_wrapper = dict(
    constructor='MSLoRAOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
# batch 16 = 8 GPUs x 2 images; `--auto-scale-lr` rescales lr for others.
auto_scale_lr = dict(enable=False, base_batch_size=16)
