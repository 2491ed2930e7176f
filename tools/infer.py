"""Run a trained detector, segmenter or classifier on your own images and
draw what it predicts, as mmdet's ``demo/image_demo.py`` does:

    python tools/infer.py INPUT CONFIG WEIGHTS [--out-dir DIR]
        [--score-thr 0.3] [--device cuda|cpu] [--allow-other-base]
        [--cfg-options ...]

INPUT is an image, a folder or a glob; WEIGHTS a full checkpoint or an
adapter file (the frozen backbone then comes from the config's
``init_cfg``, as in ``tools/test.py``). Runs on the GPU when there is one.
Writes ``DIR/<image path>.png`` (the path relative to the input's folder, or
to a glob's fixed leading folders: images of one name in several folders keep
apart) with boxes, masks, class names and scores (mmdet's
``DetLocalVisualizer``), the
predicted segmentation over the image (mmseg's ``SegLocalVisualizer``) or the
top-k labels (mmpretrain's ``UniversalVisualizer``), ``DIR/<image path>.json``
with what was drawn, and prints a line per image.
"""
import argparse
import json
import os.path as osp
import time

import mmcv
from mmengine.config import DictAction

from mslora_mm.apis import (default_device, image_files, infer, init_model,
                            output_path, test_pipeline)
from mslora_mm.cli import add_allow_other_base
from mslora_mm.visualization import draw_predictions, predictions, summary


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('input', help='an image, a folder or a glob')
    parser.add_argument('config')
    parser.add_argument('weights', help='full checkpoint (.pth) or adapter '
                        'file (.safetensors)')
    parser.add_argument('--out-dir', default='work_dirs/infer')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw detections scoring at least this')
    parser.add_argument('--topk', type=int, default=3,
                        help='classification: labels drawn')
    parser.add_argument('--device', default=default_device(),
                        help='default: cuda when available, else cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_allow_other_base(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    files = image_files(args.input)
    model = init_model(args.config, args.weights, args.device,
                       args.cfg_options, args.allow_other_base)
    pipeline = test_pipeline(model.cfg)
    for path in files:
        start = time.perf_counter()
        sample = infer(model, [path], pipeline)[0].cpu()
        ms = (time.perf_counter() - start) * 1000
        image = mmcv.imread(path, channel_order='rgb')
        drawn = draw_predictions(image, sample, model.dataset_meta,
                                 args.score_thr, args.topk)
        out = output_path(path, args.input, args.out_dir)
        mmcv.imwrite(mmcv.rgb2bgr(drawn), out)
        with open(osp.splitext(out)[0] + '.json', 'w') as f:
            json.dump(predictions(sample, args.score_thr), f)
        print(f'{path}: {summary(sample, args.score_thr)}, {ms:.0f} ms '
              f'-> {out}')


if __name__ == '__main__':
    main()
