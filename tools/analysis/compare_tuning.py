"""Is MSLoRA worth it on your data? Train one config's model in several
tuning modes (frozen, mslora, lora, mona, full) under one protocol and
compare them on data no choice was made on:

    python tools/analysis/compare_tuning.py CONFIG [--modes ...] [--seeds N]
        [--holdout F --lr-grid LR ... [MODE=LR,LR ...] [--extend-grid N]
         [--holdout-groups REGEX|metainfo:KEY] [--select-seeds K]
         [--holdout-seed S] [--select-only]] [--mona-dim N|auto]
        [--lora-rank R] [--metrics KEY ...] [--out DIR] [--work-dir DIR]
        [--rerun] [--rerun-stale] [--dry-run] [--cfg-options ...]
    python tools/analysis/compare_tuning.py --stamp-history DIR

1. Selection: a seeded fraction F of the training set is held out (by class
   for classification, by image otherwise, drawn below RepeatDataset /
   ClassBalancedDataset / ConcatDataset; ``--holdout-groups`` keeps a group,
   e.g. a video's frames, on one side); each mode trains on the rest at each
   lr of its grid and the best unrounded held-out mean chooses (a tie: the
   smaller lr); ``--extend-grid N`` adds the next lr ×~3 beyond an end of
   the grid holding the best (ties included), at most N times. The test split
   is not read; ``--select-only`` stops here.
2. Final: each mode at its lr on the whole training set, seeds 0..N-1,
   scored once on the test split (byte-identical training and test images
   are named in a warning). 3. Report in ``--out``: results.md / .json,
   selection.png, budget.png (docs/visualization.md explains them).
Each run is a fresh process kept as ``<out>/<phase>/<mode>/lr<lr>_seed<s>.json``
with the code that made it (source fingerprint, git commit, library
versions), reused when its merged config, options and package version match;
made by other code it is kept and flagged (``--rerun-stale`` redoes it).
``--dry-run`` starts nothing and lists what would start; ``--stamp-history``
gives committed run files the code of the commit that added them.
"""
import argparse
import json
import os.path as osp
import sys
from typing import List, Optional

from mslora_mm.analysis.comparison import runner as cmp
from mslora_mm.analysis.comparison.campaign import SELECT_SEED0, compare
from mslora_mm.analysis.comparison.protocol import parse_lr_grid
from mslora_mm.analysis.comparison.provenance import stamp_from_history
from mslora_mm.analysis.comparison.tuning import (MONA_RANK, TUNING_MODES,
                                                  matched_mona_rank)

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Compare tuning modes of an MSLoRA config')
    parser.add_argument('config', nargs='?')
    parser.add_argument('--modes', nargs='+', choices=TUNING_MODES,
                        default=TUNING_MODES)
    parser.add_argument('--seeds', type=int, default=1,
                        help='final seeds 0..N-1, each run in every mode')
    parser.add_argument('--holdout', type=float, metavar='F',
                        help='fraction of the training set held out to '
                        'choose each mode\'s lr on (needs --lr-grid)')
    parser.add_argument('--holdout-seed', type=int, default=0,
                        help='seed of the held-out draw (default 0)')
    parser.add_argument('--holdout-groups', metavar='REGEX|metainfo:KEY',
                        help='keep a group on one side of the split: a '
                        'pattern on the file name (its first group, else '
                        'the match) or a key of the items')
    parser.add_argument('--extend-grid', type=int, default=0, metavar='N',
                        help='while a mode\'s best held-out score is at an '
                        'end of its grid, add the next lr x~3 beyond it, at '
                        'most N times (default 0)')
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
    parser.add_argument('--rerun-stale', action='store_true',
                        help='run again the kept runs other code made')
    parser.add_argument('--dry-run', action='store_true',
                        help='start nothing: list the runs that would start')
    parser.add_argument('--stamp-history', metavar='DIR',
                        help='give the committed run files under DIR the '
                        'code of the commit that added them, and stop')
    parser.add_argument('--run', nargs=4,
                        metavar=('PHASE', 'MODE', 'LR', 'SEED'),
                        help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.stamp_history:
        return args
    if not args.config:
        parser.error('give a CONFIG (or --stamp-history DIR)')
    if (args.holdout_groups or args.extend_grid) and args.holdout is None:
        parser.error('--holdout-groups and --extend-grid need --holdout F '
                     'and --lr-grid')
    if args.seeds < 1 or args.select_seeds < 1 or args.extend_grid < 0:
        parser.error('--seeds and --select-seeds must be >= 1, '
                     '--extend-grid >= 0')
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
    if args.stamp_history:
        for path in stamp_from_history(args.stamp_history):
            print(f'stamped {path}')
        return
    options = dict(holdout=args.holdout, holdout_seed=args.holdout_seed,
                   lora_rank=args.lora_rank,
                   mona_rank=None if args.mona_dim == 'auto'
                   else int(args.mona_dim))
    if args.holdout_groups:  # absent otherwise: earlier runs keep their key
        options['holdout_groups'] = args.holdout_groups
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
    argv = [a for a in argv
            if a not in ('--rerun', '--rerun-stale', '--dry-run')]
    command = [sys.executable, osp.abspath(__file__), *argv, '--out',
               args.out, '--work-dir', args.work_dir, '--mona-dim',
               str(options['mona_rank'])]
    try:
        text = compare(args, argv, command, options)
    except (RuntimeError, ValueError) as e:
        sys.exit(str(e))
    print(text)
    if not args.dry_run:
        print(f'wrote {args.out}: ' + ('selection.md, selection.json and '
                                       'selection.png' if args.select_only
                                       else 'results.md, results.json and '
                                       'the plots'))


if __name__ == '__main__':
    main()
