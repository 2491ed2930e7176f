"""Helpers shared by the MSLoRA backbones."""
from typing import List, Sequence, Union

import torch.nn as nn

from ..mslora import MSLoRA

ADAPTER_NAME = 'mslora'


def per_stage(rank: Union[int, Sequence[int]], num_stages: int) -> List[int]:
    """Expand ``rank`` (an int, or one int per stage) to a per-stage list."""
    if isinstance(rank, int):
        return [rank] * num_stages
    rank = list(rank)
    if len(rank) != num_stages:
        raise ValueError(f'adapter_cfg.rank={rank} gives {len(rank)} ranks '
                         f'for {num_stages} stages; give one int or one per '
                         'stage')
    return rank


def _adapt_output(block: nn.Module, args: tuple, output):
    hw_shape = args[1] if len(args) > 1 else None
    return getattr(block, ADAPTER_NAME)(output, hw_shape)


def attach_output_adapter(block: nn.Module, adapter: MSLoRA) -> None:
    """Register ``adapter`` as ``block.mslora`` and apply it to the block's
    output (``block(x[, hw_shape])`` becomes ``adapter(block(x), hw_shape)``).
    The block's own state-dict keys are unchanged."""
    block.add_module(ADAPTER_NAME, adapter)
    block.register_forward_hook(_adapt_output)
