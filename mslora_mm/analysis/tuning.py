"""The tuning modes MSLoRA is compared with, derived from one MSLoRA config
(``tools/analysis/compare_tuning.py`` and ``tools/demo.py``)."""
from mmengine.config import Config

from ..models.injection import plain_backbone_config

#: ``frozen``: the plain backbone entirely frozen, no adapters;
#: ``mslora``: the config as it is; ``full``: the plain backbone trained.
TUNING_MODES = ('frozen', 'mslora', 'full')


def tuning_mode_config(cfg: Config, mode: str) -> Config:
    """``cfg`` (an MSLoRA config) changed in place for ``mode``; returned.
    Everything but the backbone (and the optimizer constructor's
    ``frozen_backbone`` check for ``full``) stays as configured."""
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
    elif mode == 'full':
        cfg.model.backbone = plain
        if 'frozen_backbone' in cfg.optim_wrapper or str(
                cfg.optim_wrapper.get('constructor')).startswith('MSLoRA'):
            cfg.optim_wrapper.frozen_backbone = False
    return cfg
