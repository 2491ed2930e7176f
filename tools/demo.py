"""The embedded demo: generate the shapes data if missing, evaluate the
untrained detector, train it, evaluate again, print box and mask mAP.

    python tools/demo.py [--config ...] [--work-dir work_dirs/demo]
"""
import argparse
import os.path as osp
import sys
import time

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from mslora_mm.datasets import generate_shapes_dataset  # noqa: E402

KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
        'coco/segm_mAP_50')


def parse_args():
    parser = argparse.ArgumentParser(description='MSLoRA CPU demo')
    parser.add_argument(
        '--config',
        default=osp.join(ROOT, 'configs/demo/mask_rcnn_r50_mslora_demo.py'))
    parser.add_argument('--work-dir', default='work_dirs/mslora_demo')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def calibrate_frozen_statistics(runner: Runner, batches: int = 8) -> None:
    """Give the random stand-in backbone what a pretrained one has: running
    BatchNorm statistics of real inputs (the demo's training images), so
    that its frozen body is normalised. Without them its activations grow
    through every residual block and swamp the neck and heads."""
    import torch
    from mslora_mm import FrozenBatchNorm2d
    model = runner.model
    norms = [m for m in model.backbone.modules()
             if isinstance(m, FrozenBatchNorm2d)]
    for m in norms:
        m.momentum = None  # cumulative average over the batches
        m.num_batches_tracked.zero_()
        m.train()
    with torch.no_grad():
        for i, batch in enumerate(runner.train_dataloader):
            if i == batches:
                break
            model.backbone(model.data_preprocessor(batch, True)['inputs'])
    for m in norms:
        m.eval()


def main():
    args = parse_args()
    start = time.time()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir
    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isfile(osp.join(data_root, 'annotations/instances_val.json')):
        print(f'Generating the demo dataset in {data_root} ...')
        generate_shapes_dataset(data_root)
    if not cfg.model.backbone.get('init_cfg'):
        print('Note: no pretrained weights offline, so the frozen backbone '
              'is randomly initialised; the demo shows the pipeline '
              'learning, not COCO accuracy.')
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    if not cfg.model.backbone.get('init_cfg'):
        calibrate_frozen_statistics(runner)
    before = runner.val_loop.run()
    runner.train()
    after = runner.val_loop.run()
    minutes = (time.time() - start) / 60
    print('\nMSLoRA demo: Mask R-CNN R-50 (frozen) + MSLoRA on '
          f'{data_root} (val)')
    print(f'{"metric":<18}{"untrained":>10}{"trained":>10}')
    for key in KEYS:
        print(f'{key:<18}{before[key]:>10.3f}{after[key]:>10.3f}')
    print(f'total time: {minutes:.1f} min; checkpoint and logs in '
          f'{cfg.work_dir}')


if __name__ == '__main__':
    main()
