"""A seeded, disjoint held-out part of a training set
(``type='HoldoutSplit'``): the selection runs of
``tools/analysis/compare_tuning.py --holdout F`` train on ``part='fit'`` and
are scored on ``part='holdout'`` of the same dataset, never reading the
config's val/test data. The split is drawn on the items of the innermost
datasets (below ``RepeatDataset``, ``ClassBalancedDataset`` and
``ConcatDataset``, which are re-applied to the fit part), so no image is in
both parts; a group rule keeps the frames of one video on one side. No data
is copied: the parts keep indices."""
import os.path as osp
import re
from typing import (Callable, Dict, Hashable, Iterator, List, Optional,
                    Sequence, Tuple, Union)

import numpy as np
from mmengine.dataset import (BaseDataset, ClassBalancedDataset,
                              ConcatDataset, RepeatDataset)
from mmengine.registry import DATASETS

from .subset import IndexSubset

#: the two parts of a split
PARTS = ('fit', 'holdout')
#: a group rule naming a key of each item's data info instead of a pattern
METAINFO = 'metainfo:'


def _draw(sizes: List[int], target: int, rng: np.random.RandomState
          ) -> List[int]:
    """Positions of the groups held out: a seeded order of the groups, each
    taken where it brings the held-out count closer to ``target``; at least
    one group held where there are two or more, never all."""
    order = rng.permutation(len(sizes))
    held: List[int] = []
    total = 0
    for g in order:
        if len(held) >= len(sizes) - 1:
            break
        if abs(total + sizes[g] - target) < abs(total - target):
            held.append(int(g))
            total += sizes[g]
    if not held and len(sizes) > 1:
        held = [int(min(order, key=lambda g: abs(sizes[g] - target)))]
    return held


def holdout_indices(labels: Sequence[int], fraction: float, seed: int,
                    groups: Optional[Sequence[Hashable]] = None
                    ) -> Tuple[List[int], List[int]]:
    """``(fit, holdout)`` indices of ``len(labels)`` items: per label value,
    whole groups (``groups[i]``: item i's group; default every item its
    own) are held out, drawn with ``seed`` until the held-out items come
    nearest ``round(fraction * n)`` of the label's ``n`` (at least one group
    where the label has two, never all). A group goes with its first item's
    label. One label for every item holds out regardless of class. Both
    lists sorted, disjoint, and together every index once."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f'holdout fraction {fraction!r} must be in (0, 1)')
    groups = list(range(len(labels))) if groups is None else list(groups)
    members: Dict[Hashable, List[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    by_label: Dict[int, List[Hashable]] = {}
    for group, items in members.items():  # first-occurrence order
        by_label.setdefault(labels[items[0]], []).append(group)
    rng = np.random.RandomState(seed)
    held: List[int] = []
    for label in sorted(by_label):
        found = by_label[label]
        sizes = [len(members[g]) for g in found]
        target = round(fraction * sum(sizes))
        for g in _draw(sizes, target, rng):
            held += members[found[g]]
    held_set = set(held)
    fit = [i for i in range(len(labels)) if i not in held_set]
    return fit, sorted(held)


def group_rule(rule: str) -> Callable[[dict], Hashable]:
    """The group key of an item's data info under ``rule``: a regular
    expression searched in the image's file name (its first group, else the
    whole match), or ``metainfo:KEY`` (the item's ``KEY``)."""
    if rule.startswith(METAINFO):
        key = rule[len(METAINFO):]

        def by_key(info: dict) -> Hashable:
            if key not in info:
                raise ValueError(
                    f'HoldoutSplit groups={rule!r}: the item '
                    f'{info.get("img_path", info)!r} has no {key!r}; it has '
                    f'{sorted(info)}')
            value = info[key]
            return tuple(value) if isinstance(value, list) else value
        return by_key
    try:
        pattern = re.compile(rule)
    except re.error as e:
        raise ValueError(f'HoldoutSplit groups={rule!r} is not a regular '
                         f'expression ({e}); give a pattern on the file '
                         'name or metainfo:KEY') from None

    def by_name(info: dict) -> Hashable:
        name = osp.basename(str(info.get('img_path', '')))
        match = pattern.search(name)
        if not match:
            raise ValueError(
                f'HoldoutSplit groups={rule!r}: the file name {name!r} '
                f'({info.get("img_path")}) does not match; give a pattern '
                'every training image matches (e.g. ^([^_]+)_ for '
                'SEQUENCE_frame.jpg)')
        return match.group(1) if pattern.groups else match.group(0)
    return by_name


def innermost(dataset) -> List:
    """The innermost datasets of ``dataset`` (through ``RepeatDataset``,
    ``ClassBalancedDataset`` and ``ConcatDataset``), in order. Another
    wrapper (an object with a ``dataset`` or ``datasets``, but the
    index-keeping subsets) is refused, named."""
    if isinstance(dataset, (RepeatDataset, ClassBalancedDataset)):
        return innermost(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return [leaf for d in dataset.datasets for leaf in innermost(d)]
    if not isinstance(dataset, IndexSubset) and (
            hasattr(dataset, 'dataset') or hasattr(dataset, 'datasets')):
        raise ValueError(
            f'HoldoutSplit cannot see through {type(dataset).__name__}: it '
            'splits the items below RepeatDataset, ClassBalancedDataset and '
            'ConcatDataset only, so an image could land in both parts; '
            f'hold out from the dataset {type(dataset).__name__} wraps, '
            'or drop it from the training set for the selection')
    return [dataset]


def _rewrap(dataset, parts: Iterator) -> object:
    """``dataset``'s wrappers around the next of ``parts`` for each of its
    innermost datasets."""
    if isinstance(dataset, RepeatDataset):
        return type(dataset)(_rewrap(dataset.dataset, parts),
                             times=dataset.times)
    if isinstance(dataset, ClassBalancedDataset):
        return type(dataset)(_rewrap(dataset.dataset, parts),
                             oversample_thr=dataset.oversample_thr)
    if isinstance(dataset, ConcatDataset):
        return type(dataset)([_rewrap(d, parts) for d in dataset.datasets],
                             ignore_keys=dataset.ignore_keys)
    return next(parts)


def _identity(info: dict, position: int) -> Hashable:
    """What names an item's image: its path, else its id, else its
    position."""
    for key in ('img_path', 'img_id'):
        if info.get(key) is not None:
            return info[key]
    return position


@DATASETS.register_module()
class HoldoutSplit(IndexSubset):
    """One part of a seeded split of ``dataset`` into a fit part and a
    held-out fraction ``fraction``, drawn on the items of its innermost
    datasets: stratified by class where the items have a ``gt_label``
    (mmpretrain classification), by image otherwise (mmdet detection, mmseg
    segmentation), by group under ``groups``. An image listed twice stays on
    one side. The fit part is ``dataset`` with its fit items (its
    ``RepeatDataset`` / ``ClassBalancedDataset`` / ``ConcatDataset``
    re-applied); the held-out part each held-out item once. The same
    ``dataset``, ``fraction``, ``seed`` and ``groups`` give the same split
    whatever the pipeline, so the fit part (training pipeline) and the
    held-out part (test pipeline) are disjoint.

    Args:
        dataset (dict | BaseDataset): the training set, or its config.
        fraction (float): the share held out, in (0, 1).
        part (str): ``'fit'`` or ``'holdout'``.
        seed (int): the draw's seed. Defaults to 0.
        groups (str, optional): keeps the items of a group on one side: a
            regular expression on the image's file name whose first group
            (else whole match) is the group, or ``metainfo:KEY`` (the
            item's ``KEY``). Defaults to None (each image its own group).

    Attributes:
        drawn (str): how the split was drawn, in words.
        shared_images (int): images in both parts (0).

    Raises:
        ValueError: ``part`` or ``fraction`` out of range, a wrapper it
            cannot see through, an item the group rule cannot name, or the
            dataset too small to hold anything out (the message names it).
    """

    def __init__(self, dataset: Union[dict, BaseDataset], fraction: float,
                 part: str, seed: int = 0,
                 groups: Optional[str] = None) -> None:
        if part not in PARTS:
            raise ValueError(f'HoldoutSplit part={part!r}: use one of '
                             f'{PARTS}')
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) \
            else dataset
        leaves = innermost(self.dataset)
        for leaf in leaves:
            leaf.full_init()
        items = [(leaf, i) for leaf in leaves for i in range(len(leaf))]
        infos = [leaf.get_data_info(i) for leaf, i in items]
        self.stratified = bool(infos) and all('gt_label' in info
                                              for info in infos)
        labels = [int(info['gt_label']) if self.stratified else 0
                  for info in infos]
        names = [_identity(info, n) for n, info in enumerate(infos)]
        keys = names
        if groups is not None:
            rule = group_rule(groups)
            keys = [rule(info) for info in infos]
        # an image listed twice is one group: it cannot straddle the parts
        first_key = {}
        for name, key in zip(names, keys):
            first_key.setdefault(name, key)
        keys = [first_key[name] for name in names]
        fit, held = holdout_indices(labels, fraction, seed, keys)
        if not held:
            raise ValueError(
                f'HoldoutSplit(fraction={fraction}): the training set has '
                f'{len(infos)} item(s) in {len(set(keys))} group(s), too few '
                'to hold any out; give a larger dataset or fraction')
        self.part = part
        self.shared_images = len({names[i] for i in fit} &
                                 {names[i] for i in held})
        n_groups = len(set(keys))
        held_groups = len({keys[i] for i in held})
        by = 'class' if self.stratified else 'image'
        per_class = ', per class' if self.stratified else ''
        self.drawn = f'by {by}' if groups is None else (
            f'by group ({groups!r}; {held_groups} of {n_groups} groups held '
            f'out{per_class})')
        if part == 'holdout' or (len(leaves) == 1
                                 and leaves[0] is self.dataset):
            chosen = fit if part == 'fit' else held
            self.items = [items[i] for i in chosen]
            self.part_dataset = None
        else:
            per_leaf: Dict[int, List[int]] = {}
            for i in fit:
                leaf, index = items[i]
                per_leaf.setdefault(id(leaf), []).append(index)
            parts = iter([_subset(leaf, per_leaf.get(id(leaf), []))
                          for leaf in leaves])
            self.part_dataset = _rewrap(self.dataset, parts)
            self.items = []

    def get_data_info(self, idx: int) -> dict:
        if self.part_dataset is not None:
            return self.part_dataset.get_data_info(idx)
        leaf, index = self.items[idx]
        return leaf.get_data_info(index)

    def __getitem__(self, idx: int) -> dict:
        if self.part_dataset is not None:
            return self.part_dataset[idx]
        leaf, index = self.items[idx]
        return leaf[index]

    def __len__(self) -> int:
        if self.part_dataset is not None:
            return len(self.part_dataset)
        return len(self.items)


def _subset(leaf, indices: List[int]):
    """The items ``indices`` of an innermost dataset, as a dataset the
    wrappers accept."""
    if not isinstance(leaf, BaseDataset):
        raise ValueError(
            f'HoldoutSplit: {type(leaf).__name__} under a dataset wrapper '
            'is not an mmengine BaseDataset; the wrapper cannot be '
            're-applied to its fit part')
    return leaf.get_subset(indices)
