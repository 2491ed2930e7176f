"""Comparisons of tuning modes on one config (``compare_tuning.py``): one
(mode, seed) run in this process, runs in fresh processes with their
results kept for resuming, and the summaries, tables and curves."""
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

from .memory import peak_memory_mb
from .tuning import tuning_mode_config

#: metrics shown by default: the headline of each mmdet/mmpretrain evaluator
DEFAULT_SUFFIXES = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50',
                    'accuracy/top1')
#: the line a run prints its result on
RESULT = 'COMPARE_TUNING '


def run_one(config: str, mode: str, seed: int, work_dir: str,
            cfg_options: Optional[dict],
            lora_rank: Optional[int] = None) -> dict:
    """Train and evaluate one (mode, seed) in this process."""
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    tuning_mode_config(cfg, mode, lora_rank)
    cfg.work_dir = work_dir
    cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
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

        def before_val_epoch(self, runner) -> None:
            record['val_start'] = time.perf_counter()

        def after_val_epoch(self, runner, metrics=None) -> None:
            record['val_s'] += time.perf_counter() - record.pop('val_start')
            record['evaluations'].append(dict(
                iter=runner.iter, epoch=runner.epoch,
                metrics={k: float(v) for k, v in (metrics or {}).items()
                         if isinstance(v, (int, float))}))

    runner = Runner.from_cfg(cfg)
    runner.register_hook(Recorder())
    start = time.perf_counter()
    runner.train()
    total = time.perf_counter() - start
    if not record['evaluations']:
        raise RuntimeError(f'{config} never evaluated: set train_cfg.'
                           'val_interval to at most the schedule length')
    return dict(mode=mode, seed=seed, work_dir=work_dir,
                metrics=record['evaluations'][-1]['metrics'],
                evaluations=record['evaluations'],
                train_s=total - record['val_s'],
                peak_memory_mb=peak_memory_mb(torch.device(
                    'cuda' if torch.cuda.is_available() else 'cpu')),
                trainable_params=record['trainable_params'],
                backbone_trainable_params=record['backbone_trainable_params'],
                device='cuda' if torch.cuda.is_available() else 'cpu')


def signature(config: str, cfg_options: Optional[dict],
              lora_rank: Optional[int]) -> dict:
    """What makes a finished run reusable: the config's path and text, the
    options and the LoRA rank."""
    with open(config) as f:
        text = f.read()
    return dict(config=osp.abspath(config), config_text=text,
                cfg_options=json.loads(json.dumps(cfg_options, default=str)),
                lora_rank=lora_rank)


def launch(command: List[str], out: str, mode: str, seed: int, sig: dict,
           rerun: bool = False) -> dict:
    """One run in a fresh process (its own peak memory): ``command`` plus
    ``--run MODE SEED`` prints its result after ``RESULT``. A finished run
    of the same signature ``sig`` (``DIR/<mode>/seed<s>/result.json``) is
    kept unless ``rerun``."""
    work_dir = osp.join(out, mode, f'seed{seed}')
    done = osp.join(work_dir, 'result.json')
    if osp.isfile(done) and not rerun:
        with open(done) as f:
            saved = json.load(f)
        if saved.get('signature') == sig:
            print(f'[compare_tuning] {mode} seed {seed}: finished before, '
                  f'kept ({done}; --rerun to run it again)', flush=True)
            return saved['result']
    os.makedirs(work_dir, exist_ok=True)
    log = osp.join(work_dir, 'run.log')
    print(f'[compare_tuning] {mode} seed {seed} -> {log}', flush=True)
    with open(log, 'w') as f:
        proc = subprocess.run([*command, '--run', mode, str(seed)],
                              stdout=f, stderr=subprocess.STDOUT, text=True)
    with open(log) as f:
        text = f.read()
    lines = [l for l in text.splitlines() if l.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.exit(f'compare_tuning: mode {mode} seed {seed} failed (exit '
                 f'{proc.returncode}); its log {log} ends:\n{text[-3000:]}')
    result = json.loads(lines[-1][len(RESULT):])
    with open(done, 'w') as f:
        json.dump(dict(signature=sig, result=result), f)
    return result


def choose_metrics(runs: List[dict], wanted: Optional[List[str]]) -> List[str]:
    keys = list(runs[0]['metrics'])
    if wanted:
        missing = [k for k in wanted if k not in keys]
        if missing:
            sys.exit(f'compare_tuning: --metrics {missing} were not logged; '
                     f'the runs logged {keys}')
        return wanted
    chosen = [k for k in keys if k.endswith(DEFAULT_SUFFIXES)]
    return chosen or keys


def summarise(runs: List[dict], metrics: List[str]) -> Dict[str, dict]:
    """Per mode: mean and sample std of each metric and cost, over seeds."""
    summary = {}
    for mode in dict.fromkeys(r['mode'] for r in runs):
        rs = [r for r in runs if r['mode'] == mode]
        values = {k: [r['metrics'][k] for r in rs] for k in metrics}
        values['train_s'] = [r['train_s'] for r in rs]
        values['peak_memory_mb'] = [r['peak_memory_mb'] for r in rs]
        summary[mode] = dict(
            seeds=[r['seed'] for r in rs],
            trainable_params=rs[0]['trainable_params'],
            backbone_trainable_params=rs[0]['backbone_trainable_params'],
            mean={k: statistics.mean(v) for k, v in values.items()},
            std={k: statistics.stdev(v) if len(v) > 1 else 0.0
                 for k, v in values.items()})
    return summary


def _count(n: int) -> str:
    return f'{n / 1e6:.2f}M' if n >= 1e5 else f'{n / 1e3:.1f}K'


def markdown_table(summary: Dict[str, dict], metrics: List[str]) -> str:
    head = ['mode', 'trainable', 'of which backbone'] + metrics + [
        'train time (s)', 'peak memory (MB)']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for mode, s in summary.items():
        m, sd = s['mean'], s['std']
        row = [mode, _count(s['trainable_params']),
               _count(s['backbone_trainable_params'])]
        row += [f'{m[k]:.3f} ± {sd[k]:.3f}' for k in metrics]
        row += [f'{m["train_s"]:.0f} ± {sd["train_s"]:.0f}',
                f'{m["peak_memory_mb"]:.0f}']
        lines.append('| ' + ' | '.join(row) + ' |')
    seeds = len(next(iter(summary.values()))['seeds'])
    lines.append(f'\nMean ± sample standard deviation over {seeds} seed(s).')
    return '\n'.join(lines) + '\n'


def plot_runs(runs: List[dict], metric: str, path: str) -> None:
    """``metric`` at every evaluation of every run (a colour per mode, a
    line style per seed), saved to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {}
    for r in runs:
        points = [(e['iter'], e['metrics'][metric]) for e in r['evaluations']
                  if metric in e['metrics']]
        colour = colours.setdefault(r['mode'], f'C{len(colours)}')
        ax.plot(*zip(*points), marker='o', color=colour,
                label=f'{r["mode"]} seed {r["seed"]}',
                linestyle='-' if r['seed'] == runs[0]['seed'] else '--')
    _save(fig, ax, 'iteration', metric, path)


def sweep_points(results: List[dict], xs: List[float], metric: str
                 ) -> Dict[str, List[tuple]]:
    """Per mode, ``(x, mean, std)`` of ``metric`` over a sweep: one
    comparison's ``results.json`` content per ``x``."""
    points: Dict[str, List[tuple]] = {}
    for x, result in zip(xs, results):
        for mode, s in result['summary'].items():
            if metric not in s['mean']:
                raise ValueError(f'{result["config"]}: no {metric!r}; it has '
                                 f'{sorted(s["mean"])}')
            points.setdefault(mode, []).append(
                (x, s['mean'][metric], s['std'][metric]))
    return points


def plot_sweep(points: Dict[str, List[tuple]], metric: str, xlabel: str,
               path: str) -> None:
    """``metric`` (mean, std as error bars) against the sweep's x on a log
    axis, a line per mode, saved to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, pts in points.items():
        x, mean, std = zip(*sorted(pts))
        ax.errorbar(x, mean, yerr=std, marker='o', capsize=3, label=mode)
    ax.set_xscale('log')
    _save(fig, ax, xlabel, metric, path)


def _save(fig, ax, xlabel: str, ylabel: str, path: str) -> None:
    """Label, grid and legend ``ax``; save ``fig`` to ``path`` and close
    it."""
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
