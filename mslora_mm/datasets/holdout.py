"""A seeded, disjoint held-out part of a training set
(``type='HoldoutSplit'``): the selection runs of
``tools/analysis/compare_tuning.py --holdout F`` train on ``part='fit'`` and
are scored on ``part='holdout'`` of the same dataset, never reading the
config's val/test data. No data is copied: the wrapper keeps indices."""
from typing import Dict, List, Tuple, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from .subset import IndexSubset

#: the two parts of a split
PARTS = ('fit', 'holdout')


def holdout_indices(labels: List[int], fraction: float, seed: int
                    ) -> Tuple[List[int], List[int]]:
    """``(fit, holdout)`` indices of ``len(labels)`` items: per label value,
    ``round(fraction * n)`` of its ``n`` items drawn with ``seed`` are held
    out (at least one where ``n > 1``, never all). One label for every item
    holds out images regardless of class. Both lists sorted, disjoint, and
    together every index once."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f'holdout fraction {fraction!r} must be in (0, 1)')
    rng = np.random.RandomState(seed)
    by_label: Dict[int, List[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    held: List[int] = []
    for label in sorted(by_label):
        found = by_label[label]
        n = len(found)
        k = min(max(round(fraction * n), 1 if n > 1 else 0), n - 1)
        held += [found[j] for j in rng.permutation(n)[:k]]
    held_set = set(held)
    fit = [i for i in range(len(labels)) if i not in held_set]
    return fit, sorted(held)


@DATASETS.register_module()
class HoldoutSplit(IndexSubset):
    """One part of a seeded split of ``dataset`` into a fit part and a
    held-out fraction ``fraction``: stratified by class where the items have
    a ``gt_label`` (mmpretrain classification), by image otherwise (mmdet
    detection, mmseg segmentation). The same ``dataset``, ``fraction`` and
    ``seed`` give the same split whatever the pipeline, so the fit part
    (training pipeline) and the held-out part (test pipeline) are disjoint.

    Args:
        dataset (dict | BaseDataset): the training set, or its config.
        fraction (float): the share held out, in (0, 1).
        part (str): ``'fit'`` or ``'holdout'``.
        seed (int): the draw's seed. Defaults to 0.

    Raises:
        ValueError: ``part`` or ``fraction`` out of range, or the dataset
            too small to hold anything out (the message names its size).
    """

    def __init__(self, dataset: Union[dict, BaseDataset], fraction: float,
                 part: str, seed: int = 0) -> None:
        if part not in PARTS:
            raise ValueError(f'HoldoutSplit part={part!r}: use one of '
                             f'{PARTS}')
        super().__init__(dataset)
        infos = [self.dataset.get_data_info(i)
                 for i in range(len(self.dataset))]
        self.stratified = bool(infos) and all('gt_label' in info
                                              for info in infos)
        labels = [int(info['gt_label']) if self.stratified else 0
                  for info in infos]
        fit, held = holdout_indices(labels, fraction, seed)
        if not held:
            raise ValueError(
                f'HoldoutSplit(fraction={fraction}): the training set has '
                f'{len(infos)} item(s), too few to hold any out; give a '
                'larger dataset or fraction')
        self.part = part
        self.indices = fit if part == 'fit' else held
