"""``CocoDataset`` that checks its annotation file before training starts."""
import os.path as osp
from typing import List

from mmengine.logging import MMLogger

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS


def _usable_polygons(segmentation) -> bool:
    if not isinstance(segmentation, list):  # RLE (crowd) masks
        return True
    return any(len(p) >= 6 and len(p) % 2 == 0 for p in segmentation)


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` plus up-front checks.

    - Image files that do not exist (local storage) raise one
      ``FileNotFoundError`` listing them, before the first iteration.
    - Annotations mmdet drops or ignores (boxes with zero width, height or
      area; masks without a usable polygon) are counted and logged with
      their ids instead of disappearing silently.
    """

    def load_data_list(self) -> List[dict]:
        self._skipped = {'zero-area box (dropped)': [],
                         'empty polygon (ignored)': []}
        data_list = super().load_data_list()
        logger = MMLogger.get_current_instance()
        for reason, ids in self._skipped.items():
            if ids:
                logger.warning(
                    f'{type(self).__name__}({self.ann_file}): {len(ids)} '
                    f'annotation(s) with a {reason}: ids {ids[:10]}'
                    f'{" ..." if len(ids) > 10 else ""}')
        if self.backend_args is None:
            missing = [d['img_path'] for d in data_list
                       if not osp.isfile(d['img_path'])]
            if missing:
                raise FileNotFoundError(
                    f'{len(missing)} image file(s) listed in {self.ann_file} '
                    f'do not exist, e.g. {missing[:5]}. Check data_root and '
                    'data_prefix in the config, or remove these images from '
                    'the annotation file.')
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        for ann in raw_data_info['raw_ann_info']:
            w, h = ann['bbox'][2:]
            if w < 1 or h < 1 or ann.get('area', 1) <= 0:
                self._skipped['zero-area box (dropped)'].append(ann['id'])
            elif not _usable_polygons(ann.get('segmentation', [[0] * 6])):
                self._skipped['empty polygon (ignored)'].append(ann['id'])
        return super().parse_data_info(raw_data_info)
