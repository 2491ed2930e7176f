"""The shared body of the index-keeping dataset wrappers (``PerClassSubset``,
``HoldoutSplit``): a built dataset and the indices of its items kept."""
from typing import List, Union

from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS


class IndexSubset:
    """The items ``indices`` of ``dataset`` (built from its config if one is
    given, fully initialised), in that order; a subclass sets ``indices``."""

    def __init__(self, dataset: Union[dict, BaseDataset]) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) \
            else dataset
        self.dataset.full_init()
        self.indices: List[int] = []

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        """Already done in ``__init__`` (mmengine calls it)."""

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(self.indices[idx])

    def __getitem__(self, idx: int) -> dict:
        return self.dataset[self.indices[idx]]

    def __len__(self) -> int:
        return len(self.indices)
