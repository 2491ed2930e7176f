"""MSLoRA on mmdet's Swin Transformer."""
from typing import Dict, Optional

from mmdet.models.backbones import SwinTransformer
from mmdet.registry import MODELS
from ..freezing import FrozenBackboneMixin
from ..mslora import MSLoRA
from .utils import attach_output_adapter, per_stage


@MODELS.register_module()
class MSLoRASwin(FrozenBackboneMixin, SwinTransformer):
    """Swin Transformer with a pre-norm MSLoRA after the FFN of every block.

    Args:
        adapter_cfg (dict, optional): ``MSLoRA`` arguments except
            ``in_channels`` and ``pre_norm``; ``rank`` may be one int per
            stage.
        body_dropout (bool): the frozen body's dropout and drop-path
            (``drop_path_rate``) follow ``train()``/``eval()`` as in mmdet;
            False switches them off. Defaults to True.
        **kwargs: every argument of ``SwinTransformer`` (``init_cfg`` with
            ``convert_weights=True`` loads official Swin checkpoints).
    """

    def __init__(self, adapter_cfg: Optional[Dict] = None,
                 body_dropout: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        adapter_cfg = dict(adapter_cfg or {})
        adapter_cfg.pop('pre_norm', None)
        ranks = per_stage(adapter_cfg.pop('rank', 128), len(self.stages))
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                channels = block.norm1.normalized_shape[0]
                attach_output_adapter(
                    block,
                    MSLoRA(channels, rank=ranks[i], pre_norm=True,
                           site=f'stages.{i}.blocks.{j}', **adapter_cfg))
        self.body_dropout = body_dropout
        self.freeze_pretrained()
