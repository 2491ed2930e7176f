"""mmdet's Pascal VOC XML dataset for any folder layout, with its
annotation files checked (``type='CheckedXMLDataset'``)."""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

from mmengine.logging import MMLogger

from mmdet.datasets import XMLDataset
from mmdet.registry import DATASETS


@DATASETS.register_module()
class CheckedXMLDataset(XMLDataset):
    """``XMLDataset`` (one VOC XML per image, image ids listed in
    ``ann_file``; ``img_subdir``/``ann_subdir`` name the image and XML
    folders under ``data_prefix.sub_data_root``) that reports, naming the
    file, what mmdet would fail on or drop silently, and keeps the rest:

    - an XML file that is missing or cannot be parsed: its image is left
      out;
    - an object whose class is not in ``metainfo.classes``: left out;
    - a box reaching outside the image (``size`` in the XML): clipped to
      it; one with nothing inside the image: left out.

    Each reason is one warning listing the files; if no image is left, a
    ``ValueError`` says where the dataset looked.
    """

    def load_data_list(self) -> List[dict]:
        self._problems: Dict[str, List[str]] = {}
        data_list = [d for d in super().load_data_list() if d is not None]
        logger = MMLogger.get_current_instance()
        for reason, found in self._problems.items():
            logger.warning(
                f'{type(self).__name__}({self.ann_file}): {reason}: '
                f'{len(found)}: {found[:10]}'
                f'{" ..." if len(found) > 10 else ""}')
        if not data_list:
            raise ValueError(
                f'{type(self).__name__}: no usable image in {self.ann_file} '
                '(XML files looked for under '
                f'{osp.join(self.sub_data_root, self.ann_subdir)}, images '
                f'under {osp.join(self.sub_data_root, self.img_subdir)}); '
                'check data_root, data_prefix.sub_data_root, ann_subdir and '
                'img_subdir in the config')
        return data_list

    def _report(self, reason: str, what: str) -> None:
        self._problems.setdefault(reason, []).append(what)

    def parse_data_info(self, img_info: dict) -> Optional[dict]:
        """mmdet's parse, or None (reported) for an image without a
        readable XML file or image file."""
        xml = img_info['xml_path']
        try:
            tree = ET.parse(xml)
        except (OSError, ET.ParseError) as e:
            self._report('XML file missing or unreadable (image left out)',
                         f'{xml}: {type(e).__name__}: {e}')
            return None
        image = osp.join(self.sub_data_root, img_info['file_name'])
        if self.backend_args is None and not osp.isfile(image):
            self._report('image file missing (image left out)', image)
            return None
        self._xml, self._tree = xml, tree
        return super().parse_data_info(img_info)

    def _parse_instance_info(self, raw_ann_info: ET.ElementTree,
                             minus_one: bool = True) -> List[dict]:
        """mmdet's instances after the checks of the class docstring on
        the XML file's objects."""
        root = self._tree.getroot()
        size = root.find('size')
        limits = None if size is None else 2 * (
            float(size.find('width').text), float(size.find('height').text))
        for obj in root.findall('object'):
            name = obj.find('name').text
            if name not in self._metainfo['classes']:
                self._report('class not in metainfo.classes (object left '
                             'out; add the class to keep it)',
                             f'{self._xml}: {name!r}')
                root.remove(obj)
                continue
            box = obj.find('bndbox')
            if limits is None or box is None:
                continue
            keys = ('xmin', 'ymin', 'xmax', 'ymax')
            xyxy = [float(box.find(k).text) for k in keys]
            # VOC pixels are 1-based: 1 <= x <= width
            clipped = [min(max(v, 1.0), limit)
                       for v, limit in zip(xyxy, limits)]
            if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
                self._report('box with nothing inside the image (left out)',
                             f'{self._xml}: {xyxy}')
                root.remove(obj)
            elif clipped != xyxy:
                self._report('box reaching outside the image (clipped)',
                             f'{self._xml}: {xyxy}')
                for k, v in zip(keys, clipped):
                    box.find(k).text = str(v)
        return super()._parse_instance_info(self._tree, minus_one)
