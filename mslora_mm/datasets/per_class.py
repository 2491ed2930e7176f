"""A fixed number of training images per class of a classification
dataset (``type='PerClassSubset'``): the data-size sweeps of
docs/results.md."""
from typing import Dict, List, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from .subset import IndexSubset


@DATASETS.register_module()
class PerClassSubset(IndexSubset):
    """``per_class`` images of every class of ``dataset``, drawn once with
    ``seed`` (the same images for every run with that seed; a smaller
    ``per_class`` draws a subset of a larger one's).

    Args:
        dataset (dict | BaseDataset): an mmpretrain classification dataset
            (each item has a ``gt_label``), or its config.
        per_class (int): images kept per class.
        seed (int): the draw's seed. Defaults to 0.

    Raises:
        ValueError: a class has fewer than ``per_class`` images (the message
            names it and its count).
    """

    def __init__(self, dataset: Union[dict, BaseDataset], per_class: int,
                 seed: int = 0) -> None:
        super().__init__(dataset)
        self.per_class = per_class
        by_class: Dict[int, List[int]] = {}
        for i in range(len(self.dataset)):
            label = int(self.dataset.get_data_info(i)['gt_label'])
            by_class.setdefault(label, []).append(i)
        classes = self.metainfo.get('classes') or sorted(by_class)
        rng = np.random.RandomState(seed)
        for label in sorted(by_class):
            found = by_class[label]
            if len(found) < per_class:
                raise ValueError(
                    f'PerClassSubset(per_class={per_class}): class '
                    f'{classes[label]!r} has only {len(found)} images in '
                    'the dataset; lower per_class')
            order = rng.permutation(len(found))[:per_class]
            self.indices += sorted(found[j] for j in order)
