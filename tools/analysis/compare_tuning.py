"""Is MSLoRA worth it on your data? Train one config's model in several
tuning modes under one protocol and compare them on data no choice was made
on.

    python tools/analysis/compare_tuning.py CONFIG
        [--modes frozen mslora lora mona full] [--seeds N]
        [--holdout F --lr-grid LR [LR ...] [MODE=LR,LR ...]
         [--select-seeds K] [--holdout-seed S] [--select-only]]
        [--mona-dim N|auto] [--lora-rank R] [--metrics KEY ...]
        [--out DIR] [--work-dir DIR] [--rerun] [--cfg-options ...]

Modes (CONFIG's backbone must be an MSLoRA one):
  frozen  the plain backbone entirely frozen, no adapters (``FrozenBackbone``)
  mslora  the config as it is
  lora    Hugging Face peft's LoRA on the Conv2d/Linear layers of the modules
          hosting the MSLoRA adapters, its rank chosen so that its trainable
          backbone parameters are nearest MSLoRA's (``--lora-rank`` sets it)
  mona    the Mona adapter (CVPR 2025) at the same sites, bottleneck 64 as
          published or ``--mona-dim N``; ``auto``: nearest MSLoRA's count
  full    the plain backbone (``plain_backbone_config``), fully trained
Everything else (schedule, augmentation, head, the frozen body's dropout and
BatchNorm) is the config's in every mode; the report states it.

Protocol:
1. Selection (``--holdout F`` with ``--lr-grid``): a seeded fraction F of the
   training set (stratified by class for classification, by image for
   detection and segmentation) is held out; every mode trains on the rest at
   each learning rate of its grid (``--select-seeds K`` seeds 1000..) and is
   scored once on the held-out part; the best mean of the first metric
   chooses the mode's lr (a tie: the smaller). The config's val/test data are
   not read. ``--lr-grid 1e-4 3e-4 full=1e-5,3e-5`` gives ``full`` its own
   grid and the other modes the plain values; without ``--lr-grid`` every
   mode trains at the config's lr and the report says no selection was made.
   ``--select-only`` stops here (every mode of ``--modes`` selects, a
   one-value grid too): ``selection.md``, ``selection.json`` and
   ``selection.png`` in ``--out``; the way to choose among variants of a
   config (``--cfg-options``) without reading its test split.
2. Final: each mode at its lr on the whole training set with seeds
   0..N-1 (``--seeds N``), evaluated once, at the end, on the config's test
   split (``test_dataloader`` / ``test_evaluator``).
3. Report in ``--out`` (default work_dirs/compare_tuning/<config>/report):
   ``results.json``, ``results.md`` (protocol and part sizes; per mode lr,
   mean ± sample std, per-seed values, trainable parameters, train time, peak
   memory; each mode's paired difference to MSLoRA with its 95% Student-t
   interval and "ahead" / "behind" / "not resolved"; the selection table),
   ``selection.png`` (held-out metric against lr) and ``budget.png`` (final
   metric against trainable backbone parameters).
Every run is a fresh process; its result is kept as
``<out>/<phase>/<mode>/lr<lr>_seed<s>.json``, its log and checkpoints go to
``--work-dir`` (default work_dirs/compare_tuning/<config>/runs). ``--out``
holds small files only: commit it, and the same command elsewhere resumes.
A kept run is reused only if its merged config (bases, ``--cfg-options``, the
mode's derivation), the tool's options and the package version are the
same; ``--rerun`` runs everything again. Train time excludes evaluation;
peak memory is the run's peak RSS on CPU, ``max_memory_allocated`` on CUDA.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

from mslora_mm.analysis import comparison as cmp
from mslora_mm.analysis.protocol import choose_lr, parse_lr_grid
from mslora_mm.analysis.report import write_report, write_selection
from mslora_mm.analysis.tuning import (MONA_RANK, TUNING_MODES,
                                       matched_mona_rank)

#: the first selection seed (final seeds are 0..N-1)
SELECT_SEED0 = 1000


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Compare tuning modes of an MSLoRA config')
    parser.add_argument('config')
    parser.add_argument('--modes', nargs='+', choices=TUNING_MODES,
                        default=TUNING_MODES)
    parser.add_argument('--seeds', type=int, default=1,
                        help='final seeds 0..N-1, each run in every mode')
    parser.add_argument('--holdout', type=float, metavar='F',
                        help='fraction of the training set held out to '
                        'choose each mode\'s lr on (needs --lr-grid)')
    parser.add_argument('--holdout-seed', type=int, default=0,
                        help='seed of the held-out draw (default 0)')
    parser.add_argument('--lr-grid', nargs='+', metavar='LR|MODE=LR,..',
                        help='learning rates to choose from, for every mode '
                        'or per mode (needs --holdout)')
    parser.add_argument('--select-seeds', type=int, default=1,
                        help=f'selection seeds {SELECT_SEED0}.. (default 1)')
    parser.add_argument('--select-only', action='store_true',
                        help='run the selection only (needs --holdout) and '
                        'write its table; the test split is not read')
    parser.add_argument('--mona-dim', default=str(MONA_RANK),
                        help='Mona\'s bottleneck: an int (default the '
                        f'published {MONA_RANK}) or auto (nearest MSLoRA\'s '
                        'trainable backbone parameters)')
    parser.add_argument('--lora-rank', type=int,
                        help='rank of the lora mode (default: matched to '
                        'MSLoRA\'s trainable backbone parameters)')
    parser.add_argument('--metrics', nargs='+',
                        help='metric keys for the tables, the first one '
                        'chooses (default: the evaluator\'s mAP, mAP_50, '
                        'top-1 and mIoU keys)')
    parser.add_argument('--out', help='small files: results and report '
                        '(default work_dirs/compare_tuning/<config>/report)')
    parser.add_argument('--work-dir', help='logs and checkpoints (default '
                        'work_dirs/compare_tuning/<config>/runs)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides for every mode, as in tools/train.py')
    parser.add_argument('--rerun', action='store_true',
                        help='run every run again, even one kept in --out')
    parser.add_argument('--run', nargs=4,
                        metavar=('PHASE', 'MODE', 'LR', 'SEED'),
                        help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.select_seeds < 1:
        parser.error('--seeds and --select-seeds must be >= 1')
    if args.seeds > SELECT_SEED0:
        parser.error(f'--seeds must be <= {SELECT_SEED0} (selection seeds '
                     f'start at {SELECT_SEED0})')
    if args.lr_grid and args.holdout is None:
        parser.error('--lr-grid needs --holdout F: learning rates are '
                     'chosen on a held-out part of the training set, never '
                     'on the test split')
    if args.holdout is not None and not args.lr_grid:
        parser.error('--holdout needs --lr-grid: without a grid there is '
                     'nothing to choose on the held-out part')
    if args.select_only and args.holdout is None:
        parser.error('--select-only needs --holdout F and --lr-grid')
    if args.holdout is not None and not 0 < args.holdout < 1:
        parser.error(f'--holdout {args.holdout}: give a fraction in (0, 1)')
    if args.mona_dim != 'auto' and not (args.mona_dim.isdigit()
                                        and int(args.mona_dim) > 0):
        parser.error(f'--mona-dim {args.mona_dim}: give a positive int or '
                     'auto')
    try:
        args.grids = parse_lr_grid(args.lr_grid, args.modes)
    except ValueError as e:
        parser.error(str(e))
    root = osp.join('work_dirs', 'compare_tuning',
                    osp.splitext(osp.basename(args.config))[0])
    args.out = args.out or osp.join(root, 'report')
    args.work_dir = args.work_dir or osp.join(root, 'runs')
    return args


def _mona_rank(args: argparse.Namespace) -> int:
    """Mona's bottleneck for ``--mona-dim`` (``auto`` resolved and logged)."""
    if args.mona_dim != 'auto':
        return int(args.mona_dim)
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    rank, count, target = matched_mona_rank(cfg.model.backbone.to_dict())
    print(f'[compare_tuning] --mona-dim auto: bottleneck {rank}, {count} '
          f'trainable backbone parameters (MSLoRA: {target}, '
          f'{count / target:.2f}x)', flush=True)
    return rank


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    options = dict(holdout=args.holdout, holdout_seed=args.holdout_seed,
                   lora_rank=args.lora_rank,
                   mona_rank=None if args.mona_dim == 'auto'
                   else int(args.mona_dim))
    if args.run:
        phase, mode, lr, seed = args.run
        cfg = cmp.run_config(args.config, args.cfg_options, phase, mode,
                             float(lr), int(seed), options)
        work_dir = osp.join(args.work_dir,
                            cmp.run_name(phase, mode, float(lr), int(seed)))
        print(cmp.RESULT + json.dumps(cmp.run_one(cfg, work_dir)),
              flush=True)
        return
    options['mona_rank'] = _mona_rank(args)
    argv = sys.argv[1:] if argv is None else argv
    argv = [a for a in argv if a != '--rerun']
    command = [sys.executable, osp.abspath(__file__), *argv, '--out',
               args.out, '--work-dir', args.work_dir, '--mona-dim',
               str(options['mona_rank'])]

    def run(phase: str, mode: str, lr: float, seed: int) -> dict:
        cfg = cmp.run_config(args.config, args.cfg_options, phase, mode, lr,
                             seed, options)
        return cmp.launch(command, args.out, args.work_dir, phase, mode, lr,
                          seed, cmp.signature(cfg, options), args.rerun)

    config_lr = cmp.config_lr(args.config, args.cfg_options)
    grids = {m: g or [config_lr] for m, g in args.grids.items()}
    select_seeds = list(range(SELECT_SEED0, SELECT_SEED0 + args.select_seeds))
    selecting = [m for m in args.modes
                 if len(grids[m]) > 1 or args.select_only]
    selection_runs = [run('select', mode, lr, seed) for seed in select_seeds
                      for mode in selecting for lr in grids[mode]]
    chosen: Dict[str, float] = {m: grids[m][0] for m in args.modes}
    if selection_runs:
        table = cmp.selection_table(selection_runs, cmp.choose_metrics(
            selection_runs, args.metrics)[0])
        for mode in selecting:
            chosen[mode] = choose_lr({c['lr']: c['values']
                                      for c in table[mode].values()})
        print('[compare_tuning] chosen on the held-out part: ' + ', '.join(
            f'{m} lr {lr:g}' for m, lr in chosen.items()), flush=True)
    if args.select_only:
        print(write_selection(args.out, args.config, argv, args.metrics,
                              chosen, selection_runs))
        print(f'wrote {args.out}/selection.md, selection.json and '
              'selection.png')
        return
    final_runs = [run('final', mode, chosen[mode], seed)
                  for seed in range(args.seeds) for mode in args.modes]
    protocol = dict(holdout=args.holdout, holdout_seed=args.holdout_seed,
                    grids=grids, chosen=chosen,
                    select_seeds=select_seeds if selection_runs else [],
                    final_seeds=list(range(args.seeds)),
                    mona_rank=options['mona_rank'],
                    lora_rank=args.lora_rank)
    held = cmp.mode_conditions(args.config, args.cfg_options, chosen,
                               options)
    print(write_report(args.out, args.config, argv, args.modes, args.metrics,
                       protocol, held, selection_runs, final_runs))
    print(f'wrote {args.out}/results.md, results.json and the plots')


if __name__ == '__main__':
    main()
