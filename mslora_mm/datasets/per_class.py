"""A fixed number of training images per class of a classification
dataset (``type='PerClassSubset'``): the data-size sweeps of
docs/results.md, and a test split drawn from images no draw has read."""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from .subset import IndexSubset


def _draw(by_class: Dict[int, List[int]], counts: Dict[int, int], seed: int,
          classes: Sequence) -> Dict[int, List[int]]:
    """``counts[label]`` of each class's indices, drawn with ``seed`` (one
    permutation per class in label order: a smaller count draws a subset
    of a larger one's)."""
    rng = np.random.RandomState(seed)
    drawn = {}
    for label in sorted(by_class):
        found = by_class[label]
        if len(found) < counts[label]:
            raise ValueError(
                f'PerClassSubset: class {classes[label]!r} has only '
                f'{len(found)} images left to draw {counts[label]} from; '
                'lower per_class')
        order = rng.permutation(len(found))[:counts[label]]
        drawn[label] = sorted(found[j] for j in order)
    return drawn


@DATASETS.register_module()
class PerClassSubset(IndexSubset):
    """``per_class`` images of every class of ``dataset``, drawn once with
    ``seed`` (the same images for every run with that seed; a smaller
    ``per_class`` draws a subset of a larger one's), from the images the
    draw ``exclude`` leaves.

    Args:
        dataset (dict | BaseDataset): an mmpretrain classification dataset
            (each item has a ``gt_label``), or its config.
        per_class (int | Sequence[int]): images kept per class, or a count
            for each class in label order.
        seed (int): the draw's seed. Defaults to 0.
        exclude (dict, optional): ``dict(per_class=..., seed=...)`` of a
            draw (e.g. the training set's) whose images this one leaves out:
            a split disjoint from it. Defaults to None.

    Raises:
        ValueError: a class has fewer than the images asked for, or
            ``per_class`` is a list of another length than the classes (the
            message names the class and its count).
    """

    def __init__(self, dataset: Union[dict, BaseDataset],
                 per_class: Union[int, Sequence[int]], seed: int = 0,
                 exclude: Optional[dict] = None) -> None:
        super().__init__(dataset)
        self.per_class = per_class
        by_class: Dict[int, List[int]] = {}
        for i in range(len(self.dataset)):
            label = int(self.dataset.get_data_info(i)['gt_label'])
            by_class.setdefault(label, []).append(i)
        classes = self.metainfo.get('classes') or sorted(by_class)
        if exclude is not None:
            left_out = _draw(by_class, self._counts(exclude['per_class'],
                                                    by_class, classes),
                             exclude.get('seed', 0), classes)
            by_class = {label: sorted(set(found) - set(left_out[label]))
                        for label, found in by_class.items()}
        drawn = _draw(by_class, self._counts(per_class, by_class, classes),
                      seed, classes)
        for label in sorted(drawn):
            self.indices += drawn[label]

    @staticmethod
    def _counts(per_class: Union[int, Sequence[int]],
                by_class: Dict[int, List[int]],
                classes: Sequence) -> Dict[int, int]:
        if isinstance(per_class, int):
            return {label: per_class for label in by_class}
        if len(per_class) != len(by_class):
            raise ValueError(
                f'PerClassSubset: per_class {list(per_class)} gives '
                f'{len(per_class)} counts for {len(by_class)} classes '
                f'({", ".join(map(str, classes))})')
        return dict(zip(sorted(by_class), per_class))
