# Copyright (c) OpenMMLab. All rights reserved. Adapted for mslora-mm.
"""Test (and evaluate) a detector: ``python tools/test.py CONFIG CHECKPOINT``
(same flags and behaviour as mmdet's ``tools/test.py``)."""
import argparse
import os.path as osp
import sys

from mmengine.runner import Runner

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.registry import RUNNERS

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mslora_mm.adapters import apply_adapter_file  # noqa: E402
from mslora_mm.engine.cli import add_common_args, load_config  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', help='checkpoint file, or an adapter file '
        '(.safetensors) applied onto the backbone of the config\'s init_cfg')
    parser.add_argument(
        '--out', type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='directory where painted images will be saved '
        '(under work_dir/timestamp/)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args)
    # an adapter file goes onto the pretrained backbone after the build
    is_adapter_file = args.checkpoint.endswith('.safetensors')
    cfg.load_from = None if is_adapter_file else args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    if is_adapter_file:
        apply_adapter_file(runner.model, args.checkpoint)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out {args.out}: the dump file must end '
                             'with .pkl or .pickle')
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
