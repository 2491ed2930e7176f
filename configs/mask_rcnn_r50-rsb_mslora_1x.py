# As mask_rcnn_r50_mslora_1x.py, initialised from mmpretrain's ResNet-50
# "strikes back" A1 checkpoint (the paper's 41.2 box AP baseline init).
_base_ = './mask_rcnn_r50_mslora_1x.py'
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_8xb256-rsb-a1-600e_in1k_20211228-20e21305.pth'  # noqa
model = dict(
    backbone=dict(
        init_cfg=dict(
            type='Pretrained', prefix='backbone.', checkpoint=checkpoint)))
