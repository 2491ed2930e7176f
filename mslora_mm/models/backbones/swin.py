"""MSLoRA preset for mmdet's Swin Transformer."""
from typing import Dict, Optional

from mmdet.models.backbones import SwinTransformer
from ...core.freezing import FrozenBackboneMixin
from ...core.sites import inject_adapters
from ..injection import per_stage, register_adapted_class


class MSLoRASwinMixin(FrozenBackboneMixin):
    """Swin Transformer with a pre-norm MSLoRA after the FFN of every block:
    the shared injection mechanism with sites ``stages.<i>.blocks.*``.

    Args:
        adapter_cfg (dict, optional): ``MSLoRA`` arguments except
            ``in_channels`` and ``pre_norm``; ``rank`` may be one int per
            stage.
        body_dropout (bool): the frozen body's dropout and drop-path
            (``drop_path_rate``) follow ``train()``/``eval()`` as in mmdet;
            False switches them off. Defaults to True.
        frozen_with_cp (bool): blocks recompute their frozen forward and
            their adapter in backward, keeping only their inputs (less
            memory, more time). Defaults to False.
        **kwargs: every argument of ``SwinTransformer`` (``init_cfg`` with
            ``convert_weights=True`` loads official Swin checkpoints).
    """
    def __init__(self, adapter_cfg: Optional[Dict] = None,
                 body_dropout: bool = True, frozen_with_cp: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        adapter_cfg = dict(adapter_cfg or {})
        adapter_cfg.pop('pre_norm', None)
        ranks = per_stage(adapter_cfg.pop('rank', 128), len(self.stages))
        inject_adapters(self, [
            dict(pattern=f'stages.{i}.blocks.*', rank=rank)  # tokens:
            for i, rank in enumerate(ranks)  # MSLoRA with pre_norm=True
        ], adapter_cfg)
        self.body_dropout = body_dropout
        self.frozen_with_cp = frozen_with_cp
        self.freeze_pretrained()


MSLoRASwin = register_adapted_class(SwinTransformer, MSLoRASwinMixin,
                                    MSLoRASwinMixin.__doc__, 'MSLoRASwin')
