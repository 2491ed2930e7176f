_base_ = '../mask_rcnn_r50_mslora_1x.py'
model = dict(backbone=dict(adapter_cfg=dict(kernel_sizes=(3, ))))
