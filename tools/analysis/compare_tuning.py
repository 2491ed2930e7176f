"""Is MSLoRA worth it on your data? Train one config's model in several
tuning modes with the same schedule, data order and seeds, and compare.

    python tools/analysis/compare_tuning.py CONFIG [--modes frozen mslora full]
        [--seeds 2] [--out DIR] [--metrics coco/bbox_mAP ...]
        [--cfg-options ...]

Modes (CONFIG's backbone must be an MSLoRA one):
  frozen  the plain backbone entirely frozen, no adapters (``FrozenBackbone``)
  mslora  the config as it is
  full    the plain backbone (``plain_backbone_config``), fully trained
Every (seed, mode) run is a fresh ``tools/train.py``-like process with
``randomness.seed`` = seed (seeds 0..N-1), its own work dir
``DIR/<mode>/seed<s>`` and log ``run.log``; its evaluations are recorded as
they happen. Writes ``DIR/results.json`` (every run, and per mode the mean
and sample standard deviation of each metric), ``DIR/results.md`` (the table)
and ``DIR/curves.png`` (the first metric at every evaluation, all runs).
Train time excludes evaluation; peak memory is the run's peak RSS on CPU,
``max_memory_allocated`` on CUDA.
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

from mslora_mm.analysis.tuning import TUNING_MODES, tuning_mode_config

#: metrics shown by default: the headline of each mmdet/mmpretrain evaluator
DEFAULT_SUFFIXES = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50',
                    'accuracy/top1')
RESULT = 'COMPARE_TUNING '


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Compare frozen, MSLoRA and full tuning of a config')
    parser.add_argument('config')
    parser.add_argument('--modes', nargs='+', choices=TUNING_MODES,
                        default=TUNING_MODES)
    parser.add_argument('--seeds', type=int, default=1,
                        help='seeds 0..N-1, each run in every mode')
    parser.add_argument('--out', help='output dir (default: work_dirs/'
                        'compare_tuning/<config name>)')
    parser.add_argument('--metrics', nargs='+',
                        help='metric keys for the table and curves (default: '
                        'the evaluator\'s mAP, mAP_50 and top-1 keys)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides for every mode, as in tools/train.py')
    parser.add_argument('--run', nargs=2, metavar=('MODE', 'SEED'),
                        help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error('--seeds must be >= 1')
    args.out = args.out or osp.join(
        'work_dirs', 'compare_tuning',
        osp.splitext(osp.basename(args.config))[0])
    return args


def peak_memory_mb() -> float:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(config: str, mode: str, seed: int, work_dir: str,
            cfg_options: Optional[dict]) -> dict:
    """Train and evaluate one (mode, seed) in this process."""
    import torch
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    tuning_mode_config(cfg, mode)
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
                peak_memory_mb=peak_memory_mb(),
                trainable_params=record['trainable_params'],
                backbone_trainable_params=record['backbone_trainable_params'],
                device='cuda' if torch.cuda.is_available() else 'cpu')


def launch(args, argv: List[str], mode: str, seed: int) -> dict:
    """One run in a fresh process (its own peak memory), given this
    command's own arguments ``argv``; its result."""
    work_dir = osp.join(args.out, mode, f'seed{seed}')
    os.makedirs(work_dir, exist_ok=True)
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--out', args.out,
           '--run', mode, str(seed)]
    log = osp.join(work_dir, 'run.log')
    print(f'[compare_tuning] {mode} seed {seed} -> {log}', flush=True)
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                              text=True)
    with open(log) as f:
        text = f.read()
    lines = [l for l in text.splitlines() if l.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.exit(f'compare_tuning: mode {mode} seed {seed} failed (exit '
                 f'{proc.returncode}); its log {log} ends:\n{text[-3000:]}')
    return json.loads(lines[-1][len(RESULT):])


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


def plot_curves(runs: List[dict], metric: str, path: str) -> None:
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
    ax.set_xlabel('iteration')
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.run:
        mode, seed = args.run[0], int(args.run[1])
        result = run_one(args.config, mode, seed,
                         osp.join(args.out, mode, f'seed{seed}'),
                         args.cfg_options)
        print(RESULT + json.dumps(result), flush=True)
        return
    os.makedirs(args.out, exist_ok=True)
    argv = sys.argv[1:] if argv is None else argv
    runs = [launch(args, argv, mode, seed)
            for seed in range(args.seeds) for mode in args.modes]
    metrics = choose_metrics(runs, args.metrics)
    summary = summarise(runs, metrics)
    table = markdown_table(summary, metrics)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(config=args.config, modes=args.modes,
                       seeds=args.seeds, metrics=metrics, summary=summary,
                       runs=runs), f, indent=1)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(f'`{args.config}`\n\n{table}')
    plot_curves(runs, metrics[0], osp.join(args.out, 'curves.png'))
    print(table)
    print(f'wrote {args.out}/results.md, results.json, curves.png')


if __name__ == '__main__':
    main()
