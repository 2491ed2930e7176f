"""The command line of ``tools/analysis/compare_tuning.py``: its options
and their checks."""
import argparse
import os.path as osp
from typing import List, Optional

from .campaign import SELECT_SEED0
from .protocol import parse_lr_grid
from .tuning import MONA_RANK, TUNING_MODES, tuning_mode


def _mode(text: str) -> str:
    try:
        return tuning_mode(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The tool's options, checked (an error names the option)."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Compare tuning modes of an MSLoRA config')
    add_selection_settings(parser)
    parser.add_argument('config', nargs='?')
    parser.add_argument('--modes', nargs='+', type=_mode,
                        default=list(TUNING_MODES),
                        help=f'{", ".join(TUNING_MODES)} (default: all), '
                        'and mona-N: Mona of bottleneck N as another row')
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
    parser.add_argument('--max-runs', type=int, metavar='N',
                        help='start at most N runs, then stop (the same '
                        'command resumes): a comparison in slices')
    parser.add_argument('--dry-run', action='store_true',
                        help='start nothing: list the runs that would start')
    parser.add_argument('--stamp-history', metavar='DIR',
                        help='give the committed run files under DIR the '
                        'code of the commit that added them, and stop')
    parser.add_argument('--variant', default='', help=argparse.SUPPRESS)
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
    if (args.schedule_grid or args.wd_grid or args.bn_choice
            or args.curve_every) and args.holdout is None:
        parser.error('--schedule-grid, --wd-grid, --bn-choice and '
                     '--curve-every need --holdout F and --lr-grid')
    if any(f < 1 for f in args.schedule_grid or ()) or (
            args.curve_every is not None and args.curve_every < 1):
        parser.error('--schedule-grid factors and --curve-every must be '
                     '>= 1')
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


def add_selection_settings(parser: argparse.ArgumentParser) -> None:
    """The settings chosen after the lr, and the held-out curves."""
    parser.add_argument('--schedule-grid', type=int, nargs='+', metavar='K',
                        help='schedule lengths (x the config\'s) to choose '
                        'from at each mode\'s lr, e.g. 1 2')
    parser.add_argument('--wd-grid', type=float, nargs='+', metavar='WD',
                        help='weight decays to choose from beside the '
                        'config\'s, at each mode\'s lr and schedule')
    parser.add_argument('--bn-choice', nargs='+', choices=TUNING_MODES,
                        metavar='MODE', help='modes whose body\'s BatchNorm '
                        'statistics (frozen or updated) are chosen last')
    parser.add_argument('--curve-every', type=int, metavar='K',
                        help='selection runs also score the held-out part '
                        'every K epochs / iterations (their curves)')
