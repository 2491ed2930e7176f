"""The tuning modes MSLoRA is compared with, derived from one MSLoRA config
(``tools/analysis/compare_tuning.py`` and ``tools/demo.py``)."""
import copy
import re
from typing import Dict, Optional, Tuple

from mmengine.config import Config
from mmengine.logging import print_log

from ...models.injection import plain_backbone_config
from ...models.peft_lora import build_without_weights, matched_lora

#: ``frozen``: the plain backbone entirely frozen, no adapters;
#: ``mslora``: the config as it is; ``lora``: peft LoRA on the layers of the
#: modules hosting the MSLoRA adapters, rank matched to MSLoRA's trainable
#: count; ``mona``: the Mona adapter at the same sites (published settings);
#: ``full``: the plain backbone trained.
TUNING_MODES = ('frozen', 'mslora', 'lora', 'mona', 'full')
#: Mona's published bottleneck width
MONA_RANK = 64
#: a further Mona row of a fixed bottleneck: ``mona-64`` beside ``mona``
MONA_WIDTH = re.compile(r'mona-([1-9][0-9]*)')


def tuning_mode(text: str) -> str:
    """``text`` checked as a tuning mode: one of ``TUNING_MODES`` or
    ``mona-<bottleneck>`` (Mona of that bottleneck, another row beside
    ``mona``); the error names both."""
    if text in TUNING_MODES or MONA_WIDTH.fullmatch(text):
        return text
    raise ValueError(f'tuning mode {text!r}: use one of {TUNING_MODES} or '
                     'mona-<bottleneck>, e.g. mona-64')


def base_mode(mode: str) -> str:
    """The mode ``mode`` derives from (``mona-64`` -> ``mona``)."""
    return 'mona' if MONA_WIDTH.fullmatch(mode) else mode


def _mona_backbone(backbone: dict, rank: int = MONA_RANK) -> dict:
    """The MSLoRA backbone config with Mona (bottleneck ``rank``) at its
    sites: Mona's arguments replace every MSLoRA argument (per-site
    overrides too)."""
    backbone = copy.deepcopy(dict(backbone))
    backbone['adapter_cfg'] = dict(type='Mona', rank=rank)
    if backbone.get('sites'):
        backbone['sites'] = [s if isinstance(s, str) else s['pattern']
                             for s in backbone['sites']]
    return backbone


def _trainable(backbone_cfg: Dict) -> int:
    model = build_without_weights(backbone_cfg)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_mona_rank(mslora_cfg: Dict) -> Tuple[int, int, int]:
    """The Mona bottleneck whose trainable backbone parameters are nearest
    those of the MSLoRA backbone config ``mslora_cfg`` (Mona's count grows
    with the bottleneck); returns it, its count and MSLoRA's."""
    target = _trainable(mslora_cfg)
    counts: Dict[int, int] = {}

    def count(rank: int) -> int:
        if rank not in counts:
            counts[rank] = _trainable(_mona_backbone(mslora_cfg, rank))
        return counts[rank]

    low, high = 1, MONA_RANK
    while count(high) < target:
        low, high = high, high * 2
    while high - low > 1:  # the last rank below target, the first above
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < target else (low, mid)
    rank = min((low, high), key=lambda r: (abs(count(r) - target), r))
    return rank, count(rank), target


def tuning_mode_config(cfg: Config, mode: str,
                       lora_rank: Optional[int] = None,
                       mona_rank: int = MONA_RANK) -> Config:
    """``cfg`` (an MSLoRA config) changed in place for ``mode``; returned.
    Everything but the backbone (and the optimizer constructor's
    ``frozen_backbone`` check where the backbone trains other parameters
    than site adapters) stays as configured. ``lora_rank`` overrides the
    matched LoRA rank; ``mona_rank`` is Mona's bottleneck."""
    tuning_mode(mode)
    width = MONA_WIDTH.fullmatch(mode)
    if width:
        mode, mona_rank = 'mona', int(width.group(1))
    plain = plain_backbone_config(cfg.model.backbone)
    if plain == dict(cfg.model.backbone):
        raise ValueError(
            f'the config\'s backbone ({cfg.model.backbone.type}) has no '
            'MSLoRA adapters; give a config whose backbone is MSLoRABackbone or a '
            'preset such as MSLoRAResNet')
    if mode == 'frozen':
        cfg.model.backbone = dict(type='FrozenBackbone', backbone=plain)
    elif mode == 'mona':
        cfg.model.backbone = _mona_backbone(cfg.model.backbone.to_dict(),
                                            mona_rank)
    elif mode == 'lora':
        lora, count, target = matched_lora(cfg.model.backbone.to_dict(),
                                           lora_rank)
        print_log(f'tuning mode lora: rank {lora["rank"]} on the '
                  f'{len(lora["hosts"])} modules hosting MSLoRA: {count} '
                  f'trainable backbone parameters (MSLoRA: {target}, '
                  f'{count / target:.2f}x)', logger='current')
        cfg.model.backbone = lora
    elif mode == 'full':
        cfg.model.backbone = plain
    if mode in ('lora', 'full') and (
            'frozen_backbone' in cfg.optim_wrapper or str(
                cfg.optim_wrapper.get('constructor')).startswith('MSLoRA')):
        cfg.optim_wrapper.frozen_backbone = False
    return cfg
