"""What a comparison run may change beside its learning rate: the schedule's
length, the optimizer's weight decay and whether the body's BatchNorm
statistics are frozen (``compare_tuning.py --schedule-grid / --wd-grid /
--bn-choice``), chosen on the held-out part after the learning rate."""
import dataclasses
from dataclasses import dataclass
from typing import List, Optional

from mmengine.config import Config


@dataclass(frozen=True)
class Variant:
    """A run's changes to the config beside its lr: the schedule ×
    ``schedule`` (its length, the lr schedulers' ends and milestones),
    ``weight_decay`` (None: the config's) and the backbone's ``norm_eval``
    (None: the config's)."""
    schedule: int = 1
    weight_decay: Optional[float] = None
    norm_eval: Optional[bool] = None

    @property
    def tag(self) -> str:
        """The run's name part, '' for the config as it is: ``x2``,
        ``wd0.01``, ``bn-updated`` / ``bn-frozen``, joined by ``_``."""
        parts = [f'x{self.schedule}'] if self.schedule != 1 else []
        if self.weight_decay is not None:
            parts.append(f'wd{self.weight_decay:g}')
        if self.norm_eval is not None:
            parts.append('bn-frozen' if self.norm_eval else 'bn-updated')
        return '_'.join(parts)

    @classmethod
    def parse(cls, tag: str) -> 'Variant':
        """The variant of ``tag`` (:attr:`tag`'s inverse)."""
        fields: dict = {}
        for part in filter(None, (tag or '').split('_')):
            if part[0] == 'x' and part[1:].isdigit():
                fields['schedule'] = int(part[1:])
            elif part.startswith('wd'):
                fields['weight_decay'] = float(part[2:])
            elif part in ('bn-frozen', 'bn-updated'):
                fields['norm_eval'] = part == 'bn-frozen'
            else:
                raise ValueError(f'variant {tag!r}: {part!r} is none of '
                                 'xN, wdV, bn-frozen, bn-updated')
        return cls(**fields)

    def replace(self, **fields) -> 'Variant':
        return dataclasses.replace(self, **fields)

    def words(self) -> str:
        """The variant in words ('as configured' for none)."""
        parts = [f'schedule ×{self.schedule}'] if self.schedule != 1 else []
        if self.weight_decay is not None:
            parts.append(f'weight decay {self.weight_decay:g}')
        if self.norm_eval is not None:
            parts.append('BatchNorm statistics ' +
                         ('frozen' if self.norm_eval else 'updated'))
        return ', '.join(parts) or 'as configured'

    def apply(self, cfg: Config) -> Config:
        """``cfg`` (a mode's config) changed in place; returned."""
        if self.schedule != 1:
            scale_schedule(cfg, self.schedule)
        if self.weight_decay is not None:
            cfg.optim_wrapper.optimizer.weight_decay = self.weight_decay
        if self.norm_eval is not None:
            set_norm_eval(cfg.model.backbone, self.norm_eval)
        return cfg


def schedule_length(cfg: Config) -> int:
    """The training loop's ``max_epochs`` or ``max_iters``."""
    length = cfg.train_cfg.get('max_epochs') or cfg.train_cfg.get('max_iters')
    if not length:
        raise ValueError('compare_tuning needs train_cfg.max_epochs or '
                         'train_cfg.max_iters in the config')
    return length


def scale_schedule(cfg: Config, factor: int) -> Config:
    """``cfg``'s training ``factor`` times as long: the loop's length; each
    lr scheduler in the loop's units ending with the training ends with it
    (its ``T_max`` stretched as much), multi-step milestones scale, one
    ending before (a warm-up) stays, and so does one in other units (an
    iteration warm-up in an epoch loop). One ending after the training is
    an error naming it."""
    key = 'max_epochs' if cfg.train_cfg.get('max_epochs') else 'max_iters'
    old = schedule_length(cfg)
    new = old * factor
    cfg.train_cfg[key] = new
    by_epoch = key == 'max_epochs'
    for i, s in enumerate(cfg.get('param_scheduler') or []):
        if s.get('by_epoch', True) != by_epoch:
            continue
        if s.get('milestones'):
            s['milestones'] = [m * factor for m in s['milestones']]
        elif s.get('end') == old:
            s['end'] = new
            if s.get('T_max') is not None:
                s['T_max'] += new - old
        elif s.get('end') is not None and s['end'] > old:
            raise ValueError(
                f'compare_tuning --schedule-grid: param_scheduler[{i}] '
                f'({s.get("type")}) ends at {s["end"]}, after the training '
                f'({key}={old}): give it end={old} to scale it with the '
                'schedule')
    return cfg


def _chain(backbone: dict) -> List[dict]:
    """The backbone config and the ``backbone``s it wraps, outermost first."""
    chain: List[dict] = [backbone]
    while isinstance(chain[-1].get('backbone'), dict):
        chain.append(chain[-1]['backbone'])
    return chain


def norm_eval_of(backbone: dict, default: Optional[bool]) -> Optional[bool]:
    """The ``norm_eval`` the backbone config ``backbone`` (or a backbone it
    wraps) sets, else ``default`` (its class's)."""
    return next((b['norm_eval'] for b in _chain(backbone)
                 if 'norm_eval' in b), default)


def set_norm_eval(backbone: dict, value: bool) -> None:
    """``norm_eval=value`` on the backbone config ``backbone`` and its
    wrapped ``backbone``s that set it, else on the innermost one."""
    chain = _chain(backbone)
    holders = [b for b in chain if 'norm_eval' in b] or chain[-1:]
    for b in holders:
        b['norm_eval'] = value
