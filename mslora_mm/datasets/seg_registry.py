"""``type='CheckedSegDataset'`` in every scope's configs, without importing
mmseg with ``mslora_mm``: the root registry holds a builder that imports the
class (``checked_seg.py``, on mmseg's ``BaseSegDataset``) on first use."""
from mmengine.registry import DATASETS

from ..extras import require


def build_checked_seg_dataset(**kwargs):
    """``type='CheckedSegDataset'``: ``checked_seg.CheckedSegDataset``
    (mmsegmentation's: without it, an ImportError names the ``[seg]``
    extra)."""
    require('mmseg.datasets', 'CheckedSegDataset')
    from .checked_seg import CheckedSegDataset
    return CheckedSegDataset(**kwargs)


DATASETS.register_module(name='CheckedSegDataset',
                         module=build_checked_seg_dataset)
