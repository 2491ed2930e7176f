# Copyright (c) OpenMMLab. All rights reserved. Adapted for mslora-mm.
"""Train a detector: ``python tools/train.py CONFIG [--resume] [...]``
(same flags and behaviour as mmdet's ``tools/train.py``)."""
import argparse

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mslora_mm.cli import add_common_args, runner_config
from mslora_mm.optim import enable_amp


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training (fp16 on CUDA, '
        'bf16 autocast on CPU)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = runner_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr='
                               'dict(enable=..., base_batch_size=...) in '
                               f'{args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
