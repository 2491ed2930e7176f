"""Is MSLoRA worth it on your data? Train one config's model in several
tuning modes (frozen, mslora, lora, mona, full) under one protocol and
compare them on data no choice was made on:

    python tools/analysis/compare_tuning.py CONFIG [--modes ...] [--seeds N]
        [--holdout F --lr-grid LR ... [MODE=LR,LR ...] [--extend-grid N]
         [--holdout-groups REGEX|metainfo:KEY] [--select-seeds K]
         [--holdout-seed S] [--schedule-grid K ...] [--wd-grid WD ...]
         [--bn-choice MODE ...] [--curve-every K] [--select-only]]
        [--mona-dim N|auto]
        [--lora-rank R] [--metrics KEY ...] [--out DIR] [--work-dir DIR]
        [--rerun] [--rerun-stale] [--dry-run] [--max-runs N]
        [--cfg-options ...]
    python tools/analysis/compare_tuning.py --stamp-history DIR

1. Selection: a seeded fraction F of the training set is held out (by class
   for classification, by image otherwise, drawn below RepeatDataset /
   ClassBalancedDataset / ConcatDataset; ``--holdout-groups`` keeps a group,
   e.g. a video's frames, on one side); each mode trains on the rest at each
   lr of its grid and the best unrounded held-out mean chooses (a tie: the
   smaller lr); ``--extend-grid N`` adds the next lr ×~3 beyond an end of
   the grid holding the best (ties included), at most N times. Then, at
   its lr, one setting at a time chosen the same way (a tie keeps the
   earlier): the schedule length (x the config's), the weight decay, the
   body's BatchNorm statistics frozen or updated (``--bn-choice`` modes);
   ``--curve-every K`` also scores the held-out part every K epochs /
   iterations (curves.png). The test split is not read; ``--select-only``
   stops here.
2. Final: each mode at its lr on the whole training set, seeds 0..N-1,
   scored once on the test split (byte-identical training and test images
   are named in a warning). 3. Report in ``--out``: results.md / .json,
   selection.png, budget.png (docs/visualization.md explains them).
Each run is a fresh process kept as
``<out>/<phase>/<mode>/lr<lr>[_<variant>]_seed<s>.json``
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
from mslora_mm.analysis.comparison.campaign import RunBudgetSpent, compare
from mslora_mm.analysis.comparison.cli import parse_args
from mslora_mm.analysis.comparison.provenance import stamp_from_history
from mslora_mm.analysis.comparison.tuning import matched_mona_rank
from mslora_mm.analysis.comparison.variants import Variant


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


def _without_run_options(argv: List[str]) -> List[str]:
    """``argv`` without the options of this invocation only (what to rerun,
    a plan, a run budget): the report's command and each run's."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == '--max-runs':
            skip = True
        elif a not in ('--rerun', '--rerun-stale', '--dry-run') and \
                not a.startswith('--max-runs='):
            kept.append(a)
    return kept


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
    if args.curve_every:
        options['curve_every'] = args.curve_every
    if args.run:
        phase, mode, lr, seed = args.run
        cfg = cmp.run_config(args.config, args.cfg_options, phase, mode,
                             float(lr), int(seed), options,
                             Variant.parse(args.variant))
        work_dir = osp.join(args.work_dir, cmp.run_name(
            phase, mode, float(lr), int(seed), args.variant))
        print(cmp.RESULT + json.dumps(cmp.run_one(cfg, work_dir)),
              flush=True)
        return
    options['mona_rank'] = _mona_rank(args)
    argv = sys.argv[1:] if argv is None else argv
    argv = _without_run_options(argv)
    command = [sys.executable, osp.abspath(__file__), *argv, '--out',
               args.out, '--work-dir', args.work_dir, '--mona-dim',
               str(options['mona_rank'])]
    try:
        text = compare(args, argv, command, options)
    except RunBudgetSpent as e:
        print(e)
        return
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
