"""A classification list file whose lines are ``PATH INDEX [NAME ...]``
(class names may contain spaces), e.g. the shared imagenet-samples'
``labels.txt``; mmpretrain's ``CustomDataset`` reads only ``PATH INDEX``."""
import os.path as osp
from typing import List

from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS as ROOT_DATASETS


class ImageListDataset(BaseDataset):
    """``ann_file`` lines ``PATH INDEX [NAME ...]``, ``PATH`` relative to
    ``data_root``; ``metainfo.classes`` from the names where given."""

    def load_data_list(self) -> List[dict]:
        data_list, names = [], {}
        with open(self.ann_file) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split(maxsplit=2)
                if len(parts) < 2 or not parts[1].isdigit():
                    raise ValueError(
                        f'{self.ann_file}:{number}: expected "PATH INDEX '
                        f'[NAME]", got {line.strip()!r}')
                label = int(parts[1])
                if len(parts) == 3:
                    names[label] = parts[2].strip()
                data_list.append(dict(
                    img_path=osp.join(self.data_root, parts[0]),
                    gt_label=label))
        if names and 'classes' not in self._metainfo:
            self._metainfo['classes'] = tuple(
                names.get(i, str(i)) for i in range(max(names) + 1))
        return data_list


ROOT_DATASETS.register_module(module=ImageListDataset)
