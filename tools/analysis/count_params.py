"""Count a config's parameters by role (backbone, adapters, neck, heads).

    python tools/analysis/count_params.py CONFIG [--cfg-options ...] [--json]
    python tools/analysis/count_params.py CONFIG --sweep-groups 1 2 4 8 \
        --sweep-ranks 64 128 256      # backbone-only Markdown rows
    python tools/analysis/count_params.py CONFIG --sites   # one row a site
"""
import argparse
import copy
import json

from mmengine.config import DictAction

from mmengine.registry import MODELS

from mslora_mm import (adapter_modules, count_parameters,
                       format_parameter_table)
from mslora_mm.cli import load_config


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
    parser.add_argument('--label', help='row label of the sweep (default: '
                        'the adapted backbone class and its site count)')
    parser.add_argument('--sites', action='store_true',
                        help='list the adapter sites: module, channels, '
                        'rank, groups, parameters')
    return parser.parse_args()


def site_rows(backbone) -> list:
    """One row per adapter, from the built model."""
    return [dict(site=name.rsplit('.', 1)[0], channels=a.in_channels,
                 rank=a.rank, groups=a.groups, pre_norm=a.pre_norm,
                 params=sum(p.numel() for p in a.parameters()))
            for name, a in adapter_modules(backbone)]


def sweep(backbone_cfg, groups, ranks, name=None):
    for g in groups:
        for d in ranks:
            cfg = copy.deepcopy(backbone_cfg)
            cfg.setdefault('adapter_cfg', {}).update(groups=g, rank=d)
            backbone = MODELS.build(cfg)
            c = count_parameters(backbone)
            label = name or (f'{type(backbone).__name__} '
                             f'({len(site_rows(backbone))} sites)')
            print(f'| {label} | {g} | {d} | {c["backbone_frozen"] / 1e6:.2f}M '
                  f'| {c["adapter_projection"] / 1e6:.3f}M '
                  f'| {c["adapter_transformation"] / 1e6:.3f}M '
                  f'| {c["adapter"] / 1e6:.3f}M '
                  f'| {c["adapter_pct_of_backbone"]:.2f}% |')


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)  # nothing downloads
    backbone_cfg.get('backbone', {}).pop('init_cfg', None)
    if args.sweep_groups:
        sweep(backbone_cfg, args.sweep_groups, args.sweep_ranks, args.label)
        return
    if args.sites:
        rows = site_rows(MODELS.build(backbone_cfg))
        print(json.dumps(rows, indent=2) if args.json else '\n'.join(
            f'{r["site"]:<28} C={r["channels"]:<5} D={r["rank"]:<4} '
            f'G={r["groups"]} pre_norm={r["pre_norm"]!s:<5} '
            f'{r["params"]:>8,d}' for r in rows))
        return
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone = backbone_cfg
    counts = count_parameters(MODELS.build(model_cfg))
    print(json.dumps(counts, indent=2) if args.json else
          format_parameter_table(counts))


if __name__ == '__main__':
    main()
