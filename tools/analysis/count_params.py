"""Count a config's parameters by role (backbone, adapters, neck, heads).

    python tools/analysis/count_params.py CONFIG [--cfg-options ...] [--json]
    python tools/analysis/count_params.py CONFIG --sweep-groups 1 2 4 8 \
        --sweep-ranks 64 128 256      # backbone-only Markdown rows
"""
import argparse
import copy
import json
import os.path as osp
import sys

from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
from mslora_mm import count_parameters, format_parameter_table  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mslora_mm.engine.cli import load_model_config  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Count parameters')
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--json', action='store_true', help='print JSON')
    parser.add_argument('--sweep-groups', type=int, nargs='+',
                        help='print a Markdown row per (G, D) of the '
                        'backbone alone')
    parser.add_argument('--sweep-ranks', type=int, nargs='+',
                        default=[128])
    return parser.parse_args()


def sweep(backbone_cfg, groups, ranks, name):
    for g in groups:
        for d in ranks:
            cfg = copy.deepcopy(backbone_cfg)
            cfg.setdefault('adapter_cfg', {}).update(groups=g, rank=d)
            c = count_parameters(MODELS.build(cfg))
            print(f'| {name} | {g} | {d} | {c["backbone_frozen"] / 1e6:.2f}M '
                  f'| {c["adapter_projection"] / 1e6:.3f}M '
                  f'| {c["adapter_transformation"] / 1e6:.3f}M '
                  f'| {c["adapter"] / 1e6:.3f}M '
                  f'| {c["adapter_pct_of_backbone"]:.2f}% |')


def main():
    args = parse_args()
    cfg = load_model_config(args.config, args.cfg_options)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    if args.sweep_groups:
        label = (f'{backbone_cfg.type} {backbone_cfg.depth}'
                 if 'depth' in backbone_cfg else
                 f'{backbone_cfg.type} {backbone_cfg.embed_dims}/'
                 f'{"-".join(map(str, backbone_cfg.depths))}')
        sweep(backbone_cfg, args.sweep_groups, args.sweep_ranks, label)
        return
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone = backbone_cfg
    counts = count_parameters(MODELS.build(model_cfg))
    print(json.dumps(counts, indent=2) if args.json else
          format_parameter_table(counts))


if __name__ == '__main__':
    main()
