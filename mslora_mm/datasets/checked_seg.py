"""``CheckedSegDataset``: mmseg's ``BaseSegDataset`` on a folder of images
and label PNGs (class names and the ignored label in the config), every
image's label file checked when listed, every label's size and values
when read (``CheckSegLabel``), and the pipeline's transforms that must know
the ignored label checked to know it."""
import os.path as osp

from mmseg.datasets import BaseSegDataset

from .seg_labels import CheckSegLabel


class CheckedSegDataset(BaseSegDataset):
    """Images ``<data_root>/<img_path>/*<img_suffix>`` and their label maps
    ``<seg_map_path>/<same stem><seg_map_suffix>``, with checks.

    Args:
        ignore_index (int): the label value that is not a class (ignored by
            loss and metric: give the decode head, ``IoUMetric``,
            ``SegDataPreProcessor(seg_pad_val=...)`` and
            ``RandomCrop(ignore_index=...)`` the same). mmseg's dataset
            holds it (``dataset.ignore_index``). Defaults to 255.
        check_labels (bool): check each label map's size and values when it
            is read (``CheckSegLabel`` after ``LoadAnnotations``). Defaults
            to True.
        **kwargs: ``BaseSegDataset``'s: ``data_root``, ``data_prefix=dict(
            img_path=..., seg_map_path=...)``, ``img_suffix``,
            ``seg_map_suffix``, ``metainfo=dict(classes=..., palette=...)``,
            ``pipeline``, ...

    Raises:
        FileNotFoundError: an image without its label file (names both).
        ValueError: no image found (names the folder and suffix); a
            pipeline transform that would treat the ignored label as a
            class (a ``RandomCrop`` with ``cat_max_ratio < 1`` ignoring
            another value) or pad labels with another value
            (``seg_pad_val``); while reading, a label map of another size
            than its image or with a value that is neither a class nor
            ``ignore_index``.
    """

    def __init__(self, ignore_index: int = 255, check_labels: bool = True,
                 **kwargs) -> None:
        super().__init__(ignore_index=ignore_index, **kwargs)
        self._check_pipeline()
        if check_labels:
            transforms = self.pipeline.transforms
            at = [i for i, t in enumerate(transforms)
                  if type(t).__name__ == 'LoadAnnotations']
            if at:
                transforms.insert(at[0] + 1, CheckSegLabel(
                    self.metainfo['classes'], ignore_index))

    def _check_pipeline(self) -> None:
        """Every transform that ignores or pads labels uses
        ``self.ignore_index`` (mmseg's default is 255 in each)."""
        for t in self.pipeline.transforms:
            name = type(t).__name__
            if getattr(t, 'cat_max_ratio', 1.) < 1. and getattr(
                    t, 'ignore_index', self.ignore_index) != self.ignore_index:
                raise ValueError(
                    f'{type(self).__name__}: the pipeline\'s {name}'
                    f'(cat_max_ratio={t.cat_max_ratio}) ignores label '
                    f'{t.ignore_index} but the dataset\'s ignore_index is '
                    f'{self.ignore_index}, so it would count the ignored '
                    f'pixels as a class: give it ignore_index='
                    f'{self.ignore_index}')
            pad = getattr(t, 'seg_pad_val', self.ignore_index)
            if isinstance(pad, int) and pad != self.ignore_index:
                raise ValueError(
                    f'{type(self).__name__}: the pipeline\'s {name} pads '
                    f'label maps with {pad} but the dataset\'s ignore_index '
                    f'is {self.ignore_index}: give it seg_pad_val='
                    f'{self.ignore_index}')

    def load_data_list(self) -> list:
        data_list = super().load_data_list()
        img_dir = self.data_prefix.get('img_path')
        if not data_list:
            raise ValueError(
                f'{type(self).__name__}: no image ending in '
                f'{self.img_suffix!r} in {img_dir}; check data_root, '
                'data_prefix.img_path and img_suffix')
        missing = [d for d in data_list if 'seg_map_path' in d
                   and not osp.isfile(d['seg_map_path'])]
        if missing:
            d = missing[0]
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing)} of {len(data_list)} '
                f'images have no label file, e.g. {d["img_path"]} needs '
                f'{d["seg_map_path"]}; add the label maps (same stem, '
                f'{self.seg_map_suffix!r}) or remove those images')
        return data_list
