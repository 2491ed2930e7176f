# UperNet R-50 on ADE20K (160k iterations, 512x512 crops), mmseg's config
# with the paper's recipe: the frozen ImageNet ResNet-50-V1c (frozen
# BatchNorm) + MSLoRA (D=128, G=4, kernels 3/5/7 after conv2 of every
# Bottleneck), AdamW, warm-up then poly decay. Only the adapters and the
# heads train. Data as mmseg reads it: data/ade/ADEChallengeData2016.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='MSLoRAResNetV1c',
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7),
                         with_cp=True),
        adapter_position='after_conv2'))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='MSLoRAOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
         by_epoch=False)
]
# batch 16 = 4 GPUs x 4 images; `--auto-scale-lr` rescales lr for others
auto_scale_lr = dict(enable=False, base_batch_size=16)
