"""What several trained segmenters predict on the same test images, side by
side: per image the image, its ground truth and one column per run (its
pixel accuracy on the image in the title), a legend of the classes.

    python tools/analysis/compare_segmentations.py RUN_DIR [RUN_DIR ...]
        [--labels frozen mslora ...] [--indices 0 5 9] [--out panel.png]
        [--device cpu]

A RUN_DIR is an mmengine work dir of a finished training (the config the
runner dumped there and ``last_checkpoint``), e.g. the final runs of
``compare_tuning.py``: ``<work-dir>/final/<mode>/lr<lr>_seed0``. The images
and labels are the test split of the first run's config.
"""
import argparse
import os.path as osp
from typing import List, Optional

import mmcv
import numpy as np

from mslora_mm.apis import infer, init_run
from mslora_mm.visualization import draw_segmentation_panel, pixel_accuracy


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', help='work dirs of trainings')
    parser.add_argument('--labels', nargs='+',
                        help='a column title per run (default: dir names)')
    parser.add_argument('--indices', nargs='+', type=int, default=[0, 1, 2],
                        help='test-split images to draw (default 0 1 2)')
    parser.add_argument('--out', default='segmentations.png')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    args.labels = args.labels or [osp.basename(osp.normpath(r))
                                  for r in args.runs]
    if len(args.labels) != len(args.runs):
        parser.error(f'--labels gives {len(args.labels)} names for '
                     f'{len(args.runs)} runs')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    from mmengine.registry import DATASETS
    args = parse_args(argv)
    models = [init_run(run, args.device) for run in args.runs]
    dataset = DATASETS.build(models[0].cfg.test_dataloader.dataset)
    ignore = dataset.ignore_index
    rows = []
    for i in args.indices:
        if not 0 <= i < len(dataset):
            raise SystemExit(f'--indices {i}: the test split has '
                             f'{len(dataset)} images')
        info = dataset.get_data_info(i)
        gt = mmcv.imread(info['seg_map_path'], flag='unchanged')
        if dataset.reduce_zero_label:
            gt = np.where(gt == 0, 255, gt.astype(np.int64) - 1)
        rows.append(dict(
            name=osp.basename(info['img_path']),
            image=mmcv.imread(info['img_path'], channel_order='rgb'),
            gt=gt.astype(np.int64),
            preds={label: infer(model, [info['img_path']])[0]
                   .pred_sem_seg.data[0].cpu().numpy()
                   for label, model in zip(args.labels, models)}))
        print(rows[-1]['name'] + ': ' + ', '.join(
            f'{label} {pixel_accuracy(p, rows[-1]["gt"], ignore):.1f}%'
            for label, p in rows[-1]['preds'].items()))
    meta = dataset.metainfo
    draw_segmentation_panel(rows, args.labels, meta['classes'],
                            meta['palette'], ignore).savefig(args.out,
                                                             dpi=100)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
