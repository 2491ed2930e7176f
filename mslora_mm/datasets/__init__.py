from .checked_coco import CheckedCocoDataset
from .checked_xml import CheckedXMLDataset
from .holdout import HoldoutSplit
from .per_class import PerClassSubset
from .seg_labels import CheckSegLabel
from .seg_registry import build_checked_seg_dataset
from .image_list import ImageListDataset
from .shapes import CLASSES as SHAPES_CLASSES
from .shapes import generate_shapes_dataset

__all__ = ['CheckedCocoDataset', 'CheckedXMLDataset', 'HoldoutSplit',
           'PerClassSubset', 'CheckSegLabel',
           'build_checked_seg_dataset', 'ImageListDataset', 'generate_shapes_dataset', 'SHAPES_CLASSES']
