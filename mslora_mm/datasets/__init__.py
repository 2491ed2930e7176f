from .checked_coco import CheckedCocoDataset
from .shapes import CLASSES as SHAPES_CLASSES
from .shapes import generate_shapes_dataset

__all__ = ['CheckedCocoDataset', 'generate_shapes_dataset', 'SHAPES_CLASSES']
