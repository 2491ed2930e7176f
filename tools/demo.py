"""The embedded demo: generate the shapes data and the Lite0 checkpoint if
missing, evaluate the untrained detector, train MSLoRA, train the
frozen-backbone baseline on the same schedule, print box and mask mAP of
all three, and draw what the trained model does into WORK_DIR/pictures:
detections on a few validation images, the reweighting maps of one, the
loss curves.

    python tools/demo.py [--config ...] [--work-dir work_dirs/mslora_demo]
        [--no-baseline] [--cfg-options ...]
"""
import argparse
import copy
import os
import os.path as osp
import time
from typing import Dict, List, Tuple

import mmcv
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mslora_mm.analysis.comparison.tuning import tuning_mode_config
from mslora_mm.apis import dataset_meta, image_files, infer
from mslora_mm.datasets import generate_shapes_dataset
from mslora_mm.models import plain_backbone_config
from mslora_mm.models.backbones.efficientnet_lite import \
    write_lite0_checkpoint
from mslora_mm.visualization import (adapter_maps, choose_sites,
                                     draw_predictions, draw_reweighting_maps,
                                     plot_curves, read_curves)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = osp.join(ROOT, 'configs', 'demo')
KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
        'coco/segm_mAP_50')


def parse_args():
    parser = argparse.ArgumentParser(description='MSLoRA CPU demo')
    parser.add_argument(
        '--config', default=osp.join(
            DEMO_CONFIGS, 'mask_rcnn_efficientnet-lite0_mslora_demo.py'),
        help='one of the demo configs in configs/demo/')
    parser.add_argument('--work-dir', default='work_dirs/mslora_demo')
    parser.add_argument('--no-baseline', action='store_true',
                        help='skip the frozen-backbone baseline')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    if osp.dirname(osp.realpath(args.config)) != osp.realpath(DEMO_CONFIGS):
        parser.error(
            f'--config {args.config}: the demo runs only its own configs '
            f'({", ".join(sorted(os.listdir(DEMO_CONFIGS)))} in '
            f'{DEMO_CONFIGS}): it generates the shapes data into the '
            "config's data root and reports the shapes' metrics. Train and "
            'test other configs with tools/train.py and tools/test.py.')
    return args


def prepare_inputs(cfg: Config) -> bool:
    """Generate the demo data and convert the shipped Lite0 weights where
    the config wants them and they are missing; True if the backbone is
    pretrained."""
    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isfile(osp.join(data_root, 'annotations/instances_val.json')):
        print(f'Generating the demo dataset in {data_root} ...')
        generate_shapes_dataset(data_root)
    plain = plain_backbone_config(cfg.model.backbone)
    checkpoint = (plain.get('init_cfg') or {}).get('checkpoint')
    if plain['type'] == 'EfficientNetLite' and checkpoint and \
            not osp.isfile(checkpoint):
        src = write_lite0_checkpoint(checkpoint)
        print(f'Converted the ImageNet EfficientNet-Lite0 weights {src} '
              f'to {checkpoint}')
    return checkpoint is not None


def calibrate_frozen_statistics(runner: Runner, batches: int = 8) -> None:
    """Give a random stand-in backbone what a pretrained one has: running
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


def train(cfg: Config, work_dir: str, pretrained: bool,
          evaluate_first: bool = False) -> Tuple[Dict[str, dict], Runner]:
    """Train ``cfg`` in ``work_dir``; its metrics after (and before), and
    the runner."""
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = work_dir
    # one visualizer (and so one scalars.json) per run in this process
    cfg.visualizer.name = f'visualizer_{osp.basename(work_dir)}'
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    if not pretrained:
        calibrate_frozen_statistics(runner)
    metrics = dict(before=runner.val_loop.run()) if evaluate_first else {}
    runner.train()
    metrics['after'] = runner.val_loop.run()
    return metrics, runner


def draw_pictures(cfg: Config, runner: Runner, work_dirs: Dict[str, str],
                  out_dir: str, images: int = 3) -> List[str]:
    """The trained model's detections on the first ``images`` validation
    images, the reweighting maps of the first, the runs' loss curves."""
    model = runner.model.eval()
    model.cfg = cfg
    os.makedirs(out_dir, exist_ok=True)
    val = cfg.val_dataloader.dataset
    files = image_files(osp.join(val.data_root, val.data_prefix.img))[:images]
    written = []
    for path, sample in zip(files, infer(model, files)):
        drawn = draw_predictions(mmcv.imread(path, channel_order='rgb'),
                                 sample.cpu(), dataset_meta(cfg), 0.3)
        written.append(osp.join(out_dir, 'detections_' + osp.splitext(
            osp.basename(path))[0] + '.png'))
        mmcv.imwrite(mmcv.rgb2bgr(drawn), written[-1])
    maps = adapter_maps(model, files[0])
    sites = choose_sites(list(maps), {n: tuple(m['feature'].shape[1:])
                                      for n, m in maps.items()}, None)
    written.append(osp.join(out_dir, 'reweighting_maps.png'))
    draw_reweighting_maps(mmcv.imread(files[0], channel_order='rgb'), sites,
                          maps).savefig(written[-1], dpi=100)
    written.append(osp.join(out_dir, 'loss.png'))
    plot_curves({name: read_curves(d, ['loss'])
                 for name, d in work_dirs.items()},
                ['loss']).savefig(written[-1], dpi=100)
    return written


def main():
    args = parse_args()
    start = time.time()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    pretrained = prepare_inputs(cfg)
    if not pretrained:
        print('Note: the config loads no pretrained weights, so the frozen '
              'backbone is randomly initialised; the demo shows the pipeline '
              'learning, not the method.')
    work_dirs = dict(MSLoRA=osp.join(args.work_dir, 'mslora'))
    mslora, runner = train(cfg, work_dirs['MSLoRA'], pretrained,
                           evaluate_first=True)
    columns = dict(untrained=mslora['before'])
    if not args.no_baseline:
        frozen = tuning_mode_config(copy.deepcopy(cfg), 'frozen')
        work_dirs['frozen'] = osp.join(args.work_dir, 'frozen')
        columns['frozen'] = train(frozen, work_dirs['frozen'],
                                  pretrained)[0]['after']
    columns['MSLoRA'] = mslora['after']
    pictures = draw_pictures(cfg, runner, work_dirs,
                             osp.join(args.work_dir, 'pictures'))
    minutes = (time.time() - start) / 60
    plain = plain_backbone_config(cfg.model.backbone)['type']
    print(f'\nMSLoRA demo: {cfg.model.type} {plain} (frozen'
          f'{", ImageNet" if pretrained else ", random"}) on '
          f'{cfg.val_dataloader.dataset.data_root} (val); "frozen": no '
          'adapters, same schedule')
    print(f'{"metric":<18}' + ''.join(f'{c:>10}' for c in columns))
    for key in KEYS:
        print(f'{key:<18}' + ''.join(f'{m[key]:>10.3f}'
                                     for m in columns.values()))
    print('pictures of the trained MSLoRA model:\n  ' + '\n  '.join(pictures))
    print(f'total time: {minutes:.1f} min; checkpoints and logs in '
          f'{args.work_dir}/')

if __name__ == '__main__':
    main()
