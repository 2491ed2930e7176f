"""The tuning modes MSLoRA is compared with, derived from one MSLoRA config
(``tools/analysis/compare_tuning.py`` and ``tools/demo.py``)."""
from typing import Optional

from mmengine.config import Config
from mmengine.logging import print_log

from ..models.injection import plain_backbone_config
from ..models.peft_lora import matched_lora

#: ``frozen``: the plain backbone entirely frozen, no adapters;
#: ``mslora``: the config as it is; ``lora``: peft LoRA on the layers of the
#: modules hosting the MSLoRA adapters, rank matched to MSLoRA's trainable
#: count; ``mona``: the Mona adapter at the same sites (published settings);
#: ``full``: the plain backbone trained.
TUNING_MODES = ('frozen', 'mslora', 'lora', 'mona', 'full')
#: Mona's published bottleneck width
MONA_RANK = 64


def _mona_backbone(backbone: dict) -> dict:
    """The MSLoRA backbone config with Mona at its sites: the published
    Mona arguments replace every MSLoRA argument (per-site overrides too)."""
    backbone['adapter_cfg'] = dict(type='Mona', rank=MONA_RANK)
    if backbone.get('sites'):
        backbone['sites'] = [s if isinstance(s, str) else s['pattern']
                             for s in backbone['sites']]
    return backbone


def tuning_mode_config(cfg: Config, mode: str,
                       lora_rank: Optional[int] = None) -> Config:
    """``cfg`` (an MSLoRA config) changed in place for ``mode``; returned.
    Everything but the backbone (and the optimizer constructor's
    ``frozen_backbone`` check where the backbone trains other parameters
    than site adapters) stays as configured. ``lora_rank`` overrides the
    matched LoRA rank."""
    if mode not in TUNING_MODES:
        raise ValueError(f'tuning mode {mode!r}: use one of {TUNING_MODES}')
    plain = plain_backbone_config(cfg.model.backbone)
    if plain == dict(cfg.model.backbone):
        raise ValueError(
            f'the config\'s backbone ({cfg.model.backbone.type}) has no '
            'MSLoRA adapters; give a config whose backbone is MSLoRABackbone or a '
            'preset such as MSLoRAResNet')
    if mode == 'frozen':
        cfg.model.backbone = dict(type='FrozenBackbone', backbone=plain)
    elif mode == 'mona':
        cfg.model.backbone = _mona_backbone(cfg.model.backbone.to_dict())
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
