# Baseline: the plain Swin-T fully fine-tuned, on the MSLoRA config's recipe.
_base_ = './upernet_swin-t_frozen_ade20k-160k.py'
model = dict(backbone=dict(_delete_=True, **_base_.swin_t))
optim_wrapper = dict(frozen_backbone=False)
