# Copyright (c) OpenMMLab. All rights reserved. Adapted for mslora-mm.
"""Test (and evaluate) a detector: ``python tools/test.py CONFIG CHECKPOINT``
(same flags and behaviour as mmdet's ``tools/test.py``).

Several adapter files, ``tools/test.py CONFIG A.safetensors B.safetensors``,
are evaluated one after the other on one built model (the frozen backbone is
loaded once) and summarised in a table.
"""
import argparse

from mmengine.runner import Runner

from mmdet.registry import RUNNERS
from mslora_mm.adapters import apply_adapter_file
from mslora_mm.cli import (add_allow_other_base, add_common_args,
                           prediction_output, runner_config, show_results,
                           tta_config)


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', nargs='+', help='checkpoint file, or adapter files '
        '(.safetensors) applied onto the backbone of the config\'s init_cfg')
    parser.add_argument(
        '--out', type=str,
        help='dump predictions to a pickle file (.pkl) for offline '
        'evaluation; segmentation configs: or a folder, where mmseg writes '
        'a PNG of labels per image')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir', help='directory where painted images will be saved '
        '(detection: under work_dir/timestamp/)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation: the '
        "config's tta_model around its model, its tta_pipeline")
    add_allow_other_base(parser)
    add_common_args(parser)
    args = parser.parse_args()
    adapter_files = [c.endswith('.safetensors') for c in args.checkpoint]
    if len(args.checkpoint) > 1 and not all(adapter_files):
        parser.error('several checkpoints must all be adapter files '
                     '(.safetensors); evaluate full checkpoints one by one')
    if len(args.checkpoint) > 1 and args.out:
        parser.error('--out takes one checkpoint')
    return args


def summary_table(results: dict) -> str:
    """A Markdown row per file of the headline metrics (mAPs, top-1)."""
    keys = [k for k in next(iter(results.values()))
            if k.endswith(('bbox_mAP', 'segm_mAP', 'bbox_mAP_50',
                           'segm_mAP_50', 'top1', '/mAP'))]
    keys = keys or list(next(iter(results.values())))
    lines = ['| adapter file | ' + ' | '.join(keys) + ' |',
             '|---|' + '---|' * len(keys)]
    for name, metrics in results.items():
        lines.append(f'| {name} | ' + ' | '.join(
            f'{metrics[k]:.4f}' if isinstance(metrics[k], float)
            else str(metrics[k]) for k in keys) + ' |')
    return '\n'.join(lines)


def main():
    args = parse_args()
    cfg = runner_config(args)
    # adapter files go onto the pretrained backbone after the build
    is_adapter_file = args.checkpoint[0].endswith('.safetensors')
    cfg.load_from = None if is_adapter_file else args.checkpoint[0]
    if args.show or args.show_dir:
        cfg = show_results(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        cfg = tta_config(cfg)
    dump = prediction_output(cfg, args.out) if args.out is not None \
        else None
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    if dump is not None:
        runner.test_evaluator.metrics.append(dump)
    if not is_adapter_file:
        runner.test()
        return
    results = {}
    for path in args.checkpoint:
        apply_adapter_file(runner.model, path, args.allow_other_base)
        results[path] = runner.test()
    if len(results) > 1:
        print('\n' + summary_table(results))


if __name__ == '__main__':
    main()
