"""The fair protocol of ``compare_tuning.py``: per-mode learning-rate grids,
the configs of the selection phase (fit part -> held-out part of the
training set) and the final phase (whole training set -> test split), the
selection rule and the grid rule (their statistics: ``stats``)."""
import copy
import inspect
import math
import statistics
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config

from .tuning import base_mode
from .variants import norm_eval_of, schedule_length

#: the two phases of a comparison
PHASES = ('select', 'final')


def parse_lr_grid(tokens: Optional[Sequence[str]], modes: Sequence[str]
                  ) -> Dict[str, Optional[List[float]]]:
    """Per mode its learning rates from ``--lr-grid`` tokens: ``LR`` values
    (every mode not named) and ``MODE=LR,LR,...`` (that mode). A mode with
    no grid maps to None (the config's lr). Values sorted, repeats dropped.

    >>> parse_lr_grid(['1e-3', 'full=1e-5,3e-5'], ['mslora', 'full'])
    {'mslora': [0.001], 'full': [1e-05, 3e-05]}
    """
    plain: List[float] = []
    named: Dict[str, List[float]] = {}
    for token in tokens or ():
        mode, sep, values = token.rpartition('=')
        if sep and mode not in modes:
            raise ValueError(f'--lr-grid {token!r}: {mode!r} is not one of '
                             f'the modes compared ({", ".join(modes)})')
        try:
            lrs = [float(v) for v in values.split(',') if v]
        except ValueError:
            raise ValueError(f'--lr-grid {token!r}: learning rates must be '
                             'numbers, e.g. 1e-4 or full=1e-5,3e-5') from None
        if not lrs or any(not lr > 0 or math.isinf(lr) for lr in lrs):
            raise ValueError(f'--lr-grid {token!r}: give positive, finite '
                             'learning rates')
        if sep:
            named.setdefault(mode, []).extend(lrs)
        else:
            plain.extend(lrs)
    return {m: sorted(set(named.get(m) or plain)) or None for m in modes}


def choose_lr(scores: Dict[float, List[float]]) -> float:
    """The learning rate of the best mean score; a tie goes to the smaller
    learning rate."""
    if not scores:
        raise ValueError('no selection runs to choose a learning rate from')
    return min(scores, key=lambda lr: (-statistics.mean(scores[lr]), lr))


def next_lr(lr: float, up: bool) -> float:
    """The value ×~3 beyond ``lr`` on the 1-3-10 ladder, above (``up``) or
    below: 1e-3 -> 3e-3 / 3e-4, 3e-3 -> 1e-2 / 1e-3; another mantissa ×3 or
    ÷3 (3 significant digits)."""
    mantissa, exponent = f'{lr:e}'.split('e')
    m, e = float(mantissa), int(exponent)
    if math.isclose(m, 1.0):
        return float(f'3e{e}' if up else f'3e{e - 1}')
    if math.isclose(m, 3.0):
        return float(f'1e{e + 1}' if up else f'1e{e}')
    return float(f'{lr * 3 if up else lr / 3:.3g}')


def grid_extension(means: Dict[float, float]) -> List[float]:
    """The grid rule: the learning rates to add to a grid whose held-out
    mean scores are ``means`` (lr -> mean): the next value ×~3 beyond each
    end holding the best score (ties included); none when the best is
    inside."""
    best = max(means.values())
    low, high = min(means), max(means)
    added = [next_lr(low, False)] if means[low] == best else []
    if means[high] == best:
        added.append(next_lr(high, True))
    return sorted(set(added) - set(means))


def _evaluate_once_at_the_end(cfg: Config, every: Optional[int] = None
                              ) -> None:
    """Evaluate at the end of training only (``every``: also every that many
    epochs / iterations, in the loop's units: a held-out curve)."""
    cfg.train_cfg.val_interval = every or schedule_length(cfg)
    cfg.train_cfg.pop('val_begin', None)
    cfg.val_cfg = cfg.get('val_cfg') or dict(type='ValLoop')


def _set_pipeline(dataset: dict, pipeline: list) -> dict:
    """A copy of the dataset config ``dataset`` whose innermost dataset
    (through wrappers' ``dataset``) has ``pipeline``."""
    dataset = copy.deepcopy(dict(dataset))
    if 'pipeline' in dataset or 'dataset' not in dataset:
        dataset['pipeline'] = pipeline
    else:
        dataset['dataset'] = _set_pipeline(dataset['dataset'], pipeline)
    return dataset


def _pipeline(dataset: dict) -> list:
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset['dataset']
    if 'pipeline' not in dataset:
        raise ValueError('compare_tuning --holdout: the config\'s val '
                         'dataset has no pipeline to evaluate with')
    return dataset['pipeline']


def _evaluators(cfg: Config) -> list:
    ev = cfg.val_evaluator
    return list(ev) if isinstance(ev, (list, tuple)) else [ev]


def _coco_metric_on_dataset_boxes(cfg: Config, pipeline: list) -> list:
    """Point CocoMetric evaluators at the samples' own boxes (``ann_file``
    None, ``instances`` packed) instead of an annotation file of another
    split; returns the pipeline to evaluate with."""
    coco = [e for e in _evaluators(cfg) if e.get('type') == 'CocoMetric']
    if not coco:
        return pipeline
    for e in coco:
        e['ann_file'] = None
    pipeline = copy.deepcopy(list(pipeline))
    pack = pipeline[-1]
    if pack.get('type') == 'PackDetInputs':
        from mmdet.datasets.transforms import PackDetInputs
        keys = tuple(pack.get('meta_keys') or inspect.signature(
            PackDetInputs).parameters['meta_keys'].default)
        if 'instances' not in keys:
            pipeline[-1] = dict(pack, meta_keys=keys + ('instances', ))
    return pipeline


def selection_config(cfg: Config, fraction: float, seed: int,
                     groups: Optional[str] = None,
                     curve_every: Optional[int] = None) -> Config:
    """``cfg`` changed in place for a selection run: trained on the fit part
    of its training set and evaluated at the end (and every
    ``curve_every`` epochs / iterations) on the held-out part (with the val
    pipeline and evaluator; ``groups``: the ``HoldoutSplit`` group rule);
    the val and test data are not in it. Returned."""
    train = cfg.train_dataloader.dataset
    pipeline = _coco_metric_on_dataset_boxes(
        cfg, _pipeline(cfg.val_dataloader.dataset))
    split = dict(type='HoldoutSplit', fraction=fraction, seed=seed)
    if groups is not None:  # absent otherwise: earlier runs keep their key
        split['groups'] = groups
    cfg.train_dataloader.dataset = dict(split, dataset=train, part='fit')
    cfg.val_dataloader.dataset = dict(
        split, dataset=_set_pipeline(train, pipeline), part='holdout')
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.pop('second_test_dataloader', None)
    cfg.pop('second_test_evaluator', None)
    _evaluate_once_at_the_end(cfg, curve_every)
    return cfg


def final_config(cfg: Config) -> Config:
    """``cfg`` changed in place for a final run: trained on its whole
    training set and evaluated once, at the end, on its test split (the
    test dataloader and evaluator), then on ``second_test_dataloader``
    with ``second_test_evaluator`` (default: the test evaluator) where the
    config has one (a second column, e.g. an earlier test split kept for
    continuity). Returned."""
    if not cfg.get('test_dataloader') or not cfg.get('test_evaluator'):
        raise ValueError('compare_tuning: the config has no test_dataloader '
                         '/ test_evaluator to report the final runs on')
    cfg.val_dataloader = cfg.test_dataloader
    cfg.val_evaluator = cfg.test_evaluator
    second = cfg.pop('second_test_dataloader', None)
    second_evaluator = cfg.pop('second_test_evaluator', None)
    if second:  # run_one tests on it after training
        cfg.test_dataloader = second
        cfg.test_evaluator = second_evaluator or cfg.val_evaluator
        cfg.test_cfg = cfg.get('test_cfg') or dict(type='TestLoop')
        cfg.compare_second_test = True
    _evaluate_once_at_the_end(cfg)
    return cfg


#: the frozen body's settings a comparison states
BODY_KEYS = ('drop_path_rate', 'drop_rate', 'attn_drop_rate', 'norm_eval',
             'frozen_stages', 'with_cp')
#: the modes whose backbone body is frozen (BatchNorm statistics included)
FROZEN_BODY = ('frozen', 'mslora', 'lora', 'mona')


def body_settings(plain_backbone: dict, scope: Optional[str]) -> dict:
    """The ``BODY_KEYS`` of the adapter-free backbone config
    ``plain_backbone``: its class's defaults (registry of ``scope``)
    overridden by the config's values."""
    from mmengine.registry import MODELS
    with MODELS.switch_scope_and_registry(scope) as registry:
        cls = registry.get(plain_backbone['type'])
    params = inspect.signature(cls).parameters if cls else {}
    body = {k: p.default for k, p in params.items()
            if k in BODY_KEYS and p.default is not inspect.Parameter.empty}
    body.update({k: plain_backbone[k] for k in BODY_KEYS
                 if k in plain_backbone})
    return body


def _types(items) -> str:
    items = items if isinstance(items, (list, tuple)) else [items]
    return ' → '.join(str(t.get('type')) for t in items if t)


def conditions(cfg: Config, mode: str, body: dict,
               body_dropout: bool = True) -> Dict[str, str]:
    """What a ``mode`` run's config holds that must be equal across modes,
    as text: schedule, batch, augmentation, optimizer (but its lr), lr
    schedule, the model besides the backbone, the body's dropout / drop path
    (``body``: :func:`body_settings`; ``body_dropout``: whether a frozen
    body's dropout follows ``train()``), its BatchNorm statistics and the
    precision."""
    optimizer = {k: v for k, v in cfg.optim_wrapper.optimizer.items()
                 if k != 'lr'}
    train = {k: v for k, v in cfg.train_cfg.items() if k != 'val_interval'}
    rest = {k: v.get('type') for k, v in cfg.model.items()
            if isinstance(v, dict) and k not in ('backbone',
                                                 'data_preprocessor')}
    drops = {k: v for k, v in body.items() if 'drop' in k}
    active = base_mode(mode) not in FROZEN_BODY or body_dropout
    if base_mode(mode) in FROZEN_BODY:
        statistics = 'frozen (the pretrained running statistics)'
    elif norm_eval_of(cfg.model.backbone, body.get('norm_eval')):
        statistics = 'frozen (norm_eval=True)'
    else:
        statistics = 'updated by training (norm_eval False)'
    return {
        'schedule': str(train),
        'batch size': str(cfg.train_dataloader.batch_size),
        'augmentation': _types(_pipeline(cfg.train_dataloader.dataset)),
        'optimizer (but lr)': str(optimizer),
        'lr schedule': _types(cfg.get('param_scheduler') or []),
        'model besides the backbone': f'{cfg.model.type}: {rest}',
        'dropout / drop path in the body': f'{drops or "none"}, '
        f'{"active" if active else "off"} in training',
        'BatchNorm statistics': statistics,
        'precision': cfg.optim_wrapper.get('type', 'OptimWrapper'),
    }
