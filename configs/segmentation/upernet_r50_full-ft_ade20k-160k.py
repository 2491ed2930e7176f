# Baseline: the plain ResNet-50-V1c fully fine-tuned (BatchNorm statistics
# frozen as in the MSLoRA config), on the MSLoRA config's recipe.
_base_ = './upernet_r50_mslora_ade20k-160k.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetV1c', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2),
        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
        style='pytorch', contract_dilation=True))
optim_wrapper = dict(frozen_backbone=False)
