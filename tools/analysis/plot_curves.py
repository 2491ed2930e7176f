"""Training curves of one or several runs from mmengine's
``vis_data/scalars.json`` (as mmdet's ``analyze_logs.py plot_curve``), one
panel per key, one line per run labelled by its work dir:

    python tools/analysis/plot_curves.py WORK_DIR [WORK_DIR ...]
        [--keys loss coco/bbox_mAP] [--labels full mslora] [--out curves.png]

A WORK_DIR may also be a ``scalars.json`` itself; a work dir with several
runs (resumed training) is read in time order. Training keys are plotted
against the iteration, evaluation keys against the step mmengine logged
them at: the epoch (``LoggerHook.log_metric_by_epoch``, its default), or the
iteration with ``default_hooks.logger.log_metric_by_epoch=False``.
"""
import argparse
import os.path as osp
from typing import List, Optional

from mslora_mm.visualization import plot_curves, read_curves


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--keys', nargs='+', default=['loss'])
    parser.add_argument('--labels', nargs='+',
                        help='one per work dir (default: the dir names)')
    parser.add_argument('--out', default='curves.png')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    labels = args.labels or [osp.basename(osp.normpath(d))
                             for d in args.work_dirs]
    if len(labels) != len(args.work_dirs):
        raise SystemExit(f'--labels gives {len(labels)} names for '
                         f'{len(args.work_dirs)} work dirs')
    runs = {label: read_curves(d, args.keys)
            for label, d in zip(labels, args.work_dirs)}
    plot_curves(runs, args.keys).savefig(args.out, dpi=100)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
