"""Is MSLoRA worth it on your data? Train one config's model in several
tuning modes with the same schedule, data order and seeds, and compare.

    python tools/analysis/compare_tuning.py CONFIG
        [--modes frozen mslora lora mona full] [--seeds 2] [--out DIR]
        [--metrics coco/bbox_mAP ...] [--lora-rank R] [--rerun]
        [--cfg-options ...]

Modes (CONFIG's backbone must be an MSLoRA one):
  frozen  the plain backbone entirely frozen, no adapters (``FrozenBackbone``)
  mslora  the config as it is
  lora    Hugging Face peft's LoRA on the Conv2d/Linear layers of the modules
          hosting the MSLoRA adapters, its rank chosen so that its trainable
          backbone parameters are nearest MSLoRA's (both logged;
          ``--lora-rank`` overrides)
  mona    the Mona adapter (CVPR 2025, published settings) at the same sites
  full    the plain backbone (``plain_backbone_config``), fully trained
Every (seed, mode) run is a fresh ``tools/train.py``-like process with
``randomness.seed`` = seed (seeds 0..N-1), its own work dir
``DIR/<mode>/seed<s>`` and log ``run.log``; its evaluations are recorded as
they happen, its result in ``DIR/<mode>/seed<s>/result.json``. Rerunning the
same command keeps every finished run (same config, options and LoRA rank)
and runs only the rest; ``--rerun`` runs everything again. Writes ``DIR/results.json`` (every run, and per mode the mean
and sample standard deviation of each metric), ``DIR/results.md`` (the table)
and ``DIR/curves.png`` (the first metric at every evaluation, all runs).
Train time excludes evaluation; peak memory is the run's peak RSS on CPU,
``max_memory_allocated`` on CUDA.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

from mslora_mm.analysis.comparison import (RESULT, choose_metrics, launch,
                                           markdown_table, plot_runs,
                                           run_one, signature, summarise)
from mslora_mm.analysis.tuning import TUNING_MODES


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Compare tuning modes of an MSLoRA config')
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
    parser.add_argument('--lora-rank', type=int,
                        help='rank of the lora mode (default: matched to '
                        'MSLoRA\'s trainable backbone parameters)')
    parser.add_argument('--rerun', action='store_true',
                        help='run finished (mode, seed) runs again')
    parser.add_argument('--run', nargs=2, metavar=('MODE', 'SEED'),
                        help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error('--seeds must be >= 1')
    args.out = args.out or osp.join(
        'work_dirs', 'compare_tuning',
        osp.splitext(osp.basename(args.config))[0])
    return args


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.run:
        mode, seed = args.run[0], int(args.run[1])
        result = run_one(args.config, mode, seed,
                         osp.join(args.out, mode, f'seed{seed}'),
                         args.cfg_options, args.lora_rank)
        print(RESULT + json.dumps(result), flush=True)
        return
    os.makedirs(args.out, exist_ok=True)
    argv = sys.argv[1:] if argv is None else argv
    argv = [a for a in argv if a != '--rerun']
    command = [sys.executable, osp.abspath(__file__), *argv, '--out',
               args.out]
    sig = signature(args.config, args.cfg_options, args.lora_rank)
    runs = [launch(command, args.out, mode, seed, sig, args.rerun)
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
    plot_runs(runs, metrics[0], osp.join(args.out, 'curves.png'))
    print(table)
    print(f'wrote {args.out}/results.md, results.json, curves.png')


if __name__ == '__main__':
    main()
