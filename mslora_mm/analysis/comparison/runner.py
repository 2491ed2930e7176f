"""Comparisons of tuning modes on one config (``compare_tuning.py``): the
config of one (phase, mode, lr, seed) run and its run in this process, runs
in fresh processes with their results kept for resuming, and the metrics
a report shows (its statistics: ``stats``; the report: ``report``)."""
import hashlib
import json
import os
import os.path as osp
import subprocess
import time
from typing import Callable, Dict, List, Optional

from mmengine.config import Config

from ...models.injection import plain_backbone_config
from ...version import __version__
from ..cost.memory import peak_memory_mb
from .protocol import (body_settings, conditions, final_config,
                       selection_config)
from .provenance import same_code
from .tuning import tuning_mode_config
from .unrounded import unrounded_evaluators
from .variants import Variant, norm_eval_of

#: metrics shown by default, the first chooses: the headline of each
#: mmdet/mmpretrain/mmseg evaluator, in this order
DEFAULT_SUFFIXES = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50',
                    'accuracy/top1', 'mIoU', 'mAcc', 'aAcc')
#: the line a run prints its result on
RESULT = 'COMPARE_TUNING '


def run_name(phase: str, mode: str, lr: float, seed: int,
             variant: str = '') -> str:
    """A run's path below the output and work folders (``variant``: its
    ``Variant.tag``)."""
    return f'{phase}/{mode}/lr{lr:g}{"_" + variant if variant else ""}' \
        f'_seed{seed}'


def run_config(config: str, cfg_options: Optional[dict], phase: str,
               mode: str, lr: Optional[float], seed: int,
               options: dict, variant: Variant = Variant()) -> Config:
    """The merged config of one run: ``config`` with ``cfg_options``,
    derived for ``mode`` (``options``: ``lora_rank``, ``mona_rank``), at
    learning rate ``lr`` (None: the config's) with ``variant``'s changes
    and ``seed``, for ``phase`` (``select``: fit part -> held-out part,
    ``options['holdout']``, ``holdout_seed``, and ``holdout_groups`` and
    ``curve_every`` where given; ``final``: training set -> test split)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    tuning_mode_config(cfg, mode, options.get('lora_rank'),
                       options['mona_rank'])
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    variant.apply(cfg)
    cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
    if phase == 'select':
        selection_config(cfg, options['holdout'], options['holdout_seed'],
                         options.get('holdout_groups'),
                         options.get('curve_every'))
    else:
        final_config(cfg)
    return cfg


def config_lr(config: str, cfg_options: Optional[dict]) -> float:
    """The learning rate ``config`` (with ``cfg_options``) trains at."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return float(cfg.optim_wrapper.optimizer.lr)


def mode_conditions(config: str, cfg_options: Optional[dict],
                    chosen: Dict[str, float], options: dict,
                    variants: Optional[Dict[str, Variant]] = None
                    ) -> Dict[str, Dict[str, str]]:
    """Per mode (at its ``chosen`` lr and its ``variants``' changes) what
    its final runs hold that must be equal across modes
    (``protocol.conditions``)."""
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    body = body_settings(plain_backbone_config(cfg.model.backbone),
                         cfg.get('default_scope'))
    body_dropout = cfg.model.backbone.get('body_dropout', True)
    variants = variants or {}
    return {mode: conditions(run_config(config, cfg_options, 'final', mode,
                                        lr, 0, options,
                                        variants.get(mode, Variant())),
                             mode, body, body_dropout)
            for mode, lr in chosen.items()}


def config_norm_eval(config: str, cfg_options: Optional[dict], mode: str,
                     options: dict) -> bool:
    """Whether ``mode``'s backbone keeps its BatchNorm statistics frozen
    (``norm_eval``) as ``config`` sets it (else its class's default)."""
    cfg = run_config(config, cfg_options, 'final', mode, None, 0, options)
    body = body_settings(plain_backbone_config(cfg.model.backbone),
                         cfg.get('default_scope'))
    return bool(norm_eval_of(cfg.model.backbone, body.get('norm_eval')))


def signature(cfg: Config, options: dict) -> dict:
    """What makes a finished run reusable: its merged config (bases,
    ``--cfg-options`` and the mode's derivation included; not its work
    dir), the tool's options and the package version."""
    content = {k: v for k, v in cfg.to_dict().items() if k != 'work_dir'}
    text = json.dumps(content, sort_keys=True, default=str)
    return dict(config_sha256=hashlib.sha256(text.encode()).hexdigest(),
                options=json.loads(json.dumps(options, sort_keys=True,
                                              default=str)),
                version=__version__)


def scalar_metrics(metrics: Dict[str, object],
                   config: str = 'the config') -> Dict[str, float]:
    """The numbers of an evaluation as floats: Python, numpy (mmseg's
    IoUMetric gives float32) and one-element tensor scalars; tables, arrays
    and strings are left out. An evaluation without a number is an error."""
    import numbers

    import numpy as np
    import torch
    kept = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            if value.size != 1:
                continue
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            kept[key] = float(value)
    if not kept:
        raise RuntimeError(
            f'{config} logged no number in its evaluation (got '
            f'{ {k: type(v).__name__ for k, v in metrics.items()} }): '
            'its val_evaluator must return scalar metrics')
    return kept


def run_one(cfg: Config, work_dir: str) -> dict:
    """Train one run's config in this process; its metrics (of the last
    evaluation, at the end), costs, data sizes, where it evaluated more
    than once its ``curve`` (every evaluation's iter, epoch, metrics), and
    where it has a test loop (a final run's second test split) the
    ``second_metrics`` of that, after training."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    cfg.work_dir = work_dir
    record: Dict = dict(evaluations=[], val_s=0.0)

    class Recorder(Hook):
        priority = 'LOWEST'

        def before_train(self, runner) -> None:
            model = runner.model
            model = getattr(model, 'module', model)
            record['trainable_params'] = sum(
                p.numel() for g in runner.optim_wrapper.param_groups
                for p in g['params'])
            record['backbone_trainable_params'] = sum(
                p.numel() for p in model.backbone.parameters()
                if p.requires_grad)
            dataset = runner.train_dataloader.dataset
            record['train_size'] = len(dataset)
            record['stratified'] = getattr(dataset, 'stratified', None)
            record['holdout_by'] = getattr(dataset, 'drawn', None)
            record['shared_images'] = getattr(dataset, 'shared_images', None)

        def before_val_epoch(self, runner) -> None:
            record['val_start'] = time.perf_counter()
            record['eval_size'] = len(runner.val_loop.dataloader.dataset)

        def after_val_epoch(self, runner, metrics=None) -> None:
            record['val_s'] += time.perf_counter() - record.pop('val_start')
            record['evaluations'].append(dict(
                iter=runner.iter, epoch=runner.epoch,
                metrics=scalar_metrics(metrics or {}, cfg.filename)))

    unrounded_evaluators(cfg)
    second = cfg.pop('compare_second_test', False)  # final_config's
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Recorder())
    start = time.perf_counter()
    runner.train()
    total = time.perf_counter() - start
    if second:
        record['second_metrics'] = scalar_metrics(runner.test(),
                                                  cfg.filename)
    if not record['evaluations']:
        raise RuntimeError(f'{cfg.filename} never evaluated: check '
                           'train_cfg.val_interval and val_begin')
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return dict(metrics=record['evaluations'][-1]['metrics'],
                train_s=total - record['val_s'],
                peak_memory_mb=peak_memory_mb(torch.device(device)),
                trainable_params=record['trainable_params'],
                backbone_trainable_params=record['backbone_trainable_params'],
                train_size=record['train_size'],
                stratified=record['stratified'],
                holdout_by=record['holdout_by'],
                shared_images=record['shared_images'],
                eval_size=record['eval_size'], device=device,
                **({'second_metrics': record['second_metrics']}
                   if second else {}),
                **({'curve': record['evaluations']}
                   if len(record['evaluations']) > 1 else {}))


def launch(command: List[str], out: str, work_root: str, phase: str,
           mode: str, lr: float, seed: int, sig: dict, code: dict,
           rerun: bool = False, rerun_stale: bool = False,
           dry_run: bool = False, variant: str = '',
           on_start: Optional[Callable[[str], None]] = None
           ) -> Optional[dict]:
    """One run in a fresh process (its own peak memory): ``command`` plus
    ``[--variant TAG] --run PHASE MODE LR SEED`` prints its result after
    ``RESULT``, its log is ``<work_root>/<run>/run.log``. The result is kept as
    ``<out>/<run>.json`` with ``sig`` and ``code`` (the running code,
    ``provenance.code_version``); a kept result of the same signature is
    returned without a run unless ``rerun``, or ``rerun_stale`` and other
    code made it. The result holds the ``code`` that made it. ``dry_run``:
    nothing starts, None for a run that would; ``on_start(name)`` is called
    before a run starts (it may raise to stop the comparison there)."""
    name = run_name(phase, mode, lr, seed, variant)
    done = osp.join(out, name + '.json')
    what = f'{phase} {mode} lr {lr:g}{" " + variant if variant else ""} ' \
        f'seed {seed}'
    if osp.isfile(done) and not rerun:
        with open(done) as f:
            saved = json.load(f)
        stale = not same_code(saved.get('code'), code)
        if saved.get('signature') == sig and not (stale and rerun_stale):
            other = ', made by other code (--rerun-stale to redo it)' \
                if stale else ''
            print(f'[compare_tuning] {what}: finished before, kept ({done}'
                  f'{other}; --rerun to run it again)', flush=True)
            return dict(saved['result'], code=saved.get('code'),
                        variant=saved['result'].get('variant', ''))
        why = 'other code' if saved.get('signature') == sig else \
            'another config, options or version'
        print(f'[compare_tuning] {what}: {done} was made with {why}; '
              f'{"it would run" if dry_run else "running it"} again',
              flush=True)
    if dry_run:
        print(f'[compare_tuning] {what}: would start', flush=True)
        return None
    if on_start is not None:
        on_start(name)
    work_dir = osp.join(work_root, name)
    os.makedirs(work_dir, exist_ok=True)
    log = osp.join(work_dir, 'run.log')
    print(f'[compare_tuning] {what} -> {log}', flush=True)
    with open(log, 'w') as f:
        proc = subprocess.run([*command, *(['--variant', variant]
                                             if variant else []),
                               '--run', phase, mode, repr(lr), str(seed)],
                              stdout=f,
                              stderr=subprocess.STDOUT, text=True)
    with open(log) as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f'compare_tuning: {what} failed (exit {proc.returncode}); its '
            f'log {log} ends:\n{text[-3000:]}')
    result = dict(json.loads(lines[-1][len(RESULT):]), phase=phase,
                  mode=mode, lr=lr, seed=seed, variant=variant)
    os.makedirs(osp.dirname(done), exist_ok=True)
    with open(done, 'w') as f:
        json.dump(dict(signature=sig, code=code, result=result), f, indent=1)
    return dict(result, code=code)


def choose_metrics(runs: List[dict], wanted: Optional[List[str]]) -> List[str]:
    """``wanted`` (checked against what the runs logged), else the logged
    keys of ``DEFAULT_SUFFIXES`` in its order, else every logged key."""
    keys = list(runs[0]['metrics'])
    if wanted:
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise ValueError(f'compare_tuning: --metrics {missing} were '
                             f'not logged; the runs logged {keys}')
        return wanted
    rank = {k: min(i for i, s in enumerate(DEFAULT_SUFFIXES)
                   if k.endswith(s)) for k in keys
            if k.endswith(DEFAULT_SUFFIXES)}
    return sorted(rank, key=rank.get) or keys
