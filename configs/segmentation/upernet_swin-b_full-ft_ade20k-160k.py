# Baseline: the plain Swin-B (ImageNet-22K) fully fine-tuned, on the MSLoRA
# config's recipe.
_base_ = './upernet_swin-b_frozen_ade20k-160k.py'
model = dict(backbone=dict(_delete_=True, **_base_.swin_b))
optim_wrapper = dict(frozen_backbone=False)
