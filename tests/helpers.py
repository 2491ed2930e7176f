"""Small detectors and fake batches for the tests."""
import copy

import torch
from mmengine.hub import get_config

from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs


def mask_rcnn_cfg(backbone: dict, in_channels=(64, 128, 256, 512),
                  num_classes: int = 3) -> dict:
    """mmdet's Mask R-CNN FPN model config with ``backbone`` swapped in."""
    cfg = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py').model
    cfg.backbone = backbone
    cfg.neck.in_channels = list(in_channels)
    cfg.roi_head.bbox_head.num_classes = num_classes
    cfg.roi_head.mask_head.num_classes = num_classes
    return copy.deepcopy(cfg)


def build_detector(backbone: dict, **kwargs):
    model = MODELS.build(mask_rcnn_cfg(backbone, **kwargs))
    model.init_weights()
    return model


def fake_batch(model, batch_size=2, size=96, num_classes=3, seed=0):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(batch_size, [[3, size, size]] * batch_size,
                            num_items=[3] * batch_size,
                            num_classes=num_classes, with_mask=True)
    return model.data_preprocessor(packed, True)
