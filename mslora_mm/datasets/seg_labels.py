"""Semantic-segmentation labels checked where they are read: the
``CheckSegLabel`` transform (after ``LoadAnnotations``; ``CheckedSegDataset``
inserts it)."""
from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckSegLabel(BaseTransform):
    """Check one sample's label map against its image: the same height and
    width, and every value a class index (``0 .. num_classes - 1``) or
    ``ignore_index``. Place it after ``LoadAnnotations`` (and any
    ``label_map`` / ``reduce_zero_label`` it applies).

    Args:
        classes (Sequence[str]): the class names (their count sets the
            valid values; the names go into the message).
        ignore_index (int): the value ignored by loss and metric.

    Raises:
        ValueError: a wrong size or value; the message names the label
            file, the image, what was found and how to fix it.
    """

    def __init__(self, classes: Sequence[str], ignore_index: int) -> None:
        self.classes = tuple(classes)
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        label = results['gt_seg_map']
        seg_path = results.get('seg_map_path', '<label map>')
        # as read: a test pipeline resizes the image before the labels load
        img_shape = tuple(results.get('ori_shape') or results['img'].shape)[:2]
        if label.shape[:2] != img_shape:
            raise ValueError(
                f'{seg_path}: the label map is {label.shape[1]}x'
                f'{label.shape[0]} (w x h) but its image '
                f'{results.get("img_path")} is {img_shape[1]}x{img_shape[0]};'
                ' a label map must have its image\'s size: fix the pair (or '
                'resize the labels with nearest-neighbour interpolation)')
        values = np.unique(label)
        bad = [int(v) for v in values
               if not (0 <= v < len(self.classes) or v == self.ignore_index)]
        if bad:
            raise ValueError(
                f'{seg_path}: label value(s) {bad} are neither a class '
                f'(0..{len(self.classes) - 1}: {", ".join(self.classes)}) '
                f'nor the ignored value {self.ignore_index}; remap them, or '
                'set the classes (metainfo) and ignore_index in the config')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(classes={len(self.classes)}, '
                f'ignore_index={self.ignore_index})')
