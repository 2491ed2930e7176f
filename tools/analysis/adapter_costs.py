"""What each adapter of a config's backbone costs on its own: its train step
(forward and backward on the feature its site gets from random images of
``--img-size``) and its arithmetic, one row per site (docs/benchmarks.md).

    python tools/analysis/adapter_costs.py CONFIG [--img-size 512]
        [--batch 2] [--iters 3] [--warmup 1] [--cfg-options ...]
"""
import argparse

import torch
from mmengine.config import DictAction

from mslora_mm.analysis.site_costs import (adapter_site_costs,
                                           format_site_costs)
from mslora_mm.cli import load_config
from mslora_mm.models.peft_lora import build_without_weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Cost of each adapter')
    parser.add_argument('config')
    parser.add_argument('--img-size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(0)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    # the cost needs no weights
    backbone = build_without_weights(cfg.model.backbone).to(device)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size,
                         generator=torch.Generator().manual_seed(0))
    costs = adapter_site_costs(backbone, images.to(device), args.iters,
                               args.warmup)
    if not costs:
        raise SystemExit(f'{args.config}: the backbone has no adapters')
    print(f'{args.config}: {args.batch} x {args.img_size}^2 on {device}, '
          f'median of {args.iters} steps')
    print(format_site_costs(costs))


if __name__ == '__main__':
    main()
