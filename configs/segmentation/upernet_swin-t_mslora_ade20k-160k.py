# UperNet Swin-T (ImageNet-1K) on ADE20K (160k iterations, 512x512), mmseg's
# config with the paper's recipe: the frozen Swin + MSLoRA after the FFN of
# every block (D=128, G=4, kernels 3/5/7, pre-norm), AdamW. Only the
# adapters and the heads train.
_base_ = ('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_'
          '8xb2-160k_ade20k-512x512.py')
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='MSLoRASwin',
        frozen_with_cp=True,
        adapter_cfg=dict(rank=128, groups=4, kernel_sizes=(3, 5, 7),
                         with_cp=True)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='MSLoRAOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
# batch 16 = 8 GPUs x 2 images
auto_scale_lr = dict(enable=False, base_batch_size=16)
