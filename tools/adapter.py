"""Adapter files: export, merge, inspect.

    python tools/adapter.py export CONFIG CHECKPOINT --out FILE.safetensors [--adapters-only]
    python tools/adapter.py merge CONFIG FILE.safetensors --out FULL.pth
        (one ordinary mmengine checkpoint of the MSLoRA model: base backbone
        weights + adapters + neck and heads; MSLoRA is nonlinear, so the
        adapters stay modules and are not folded into the backbone weights)
    python tools/adapter.py inspect FILE.safetensors
"""
import argparse
import json
import os.path as osp
from dataclasses import asdict

import torch
from mmengine.config import DictAction
from mmengine.runner import load_checkpoint

from mmengine.registry import MODELS

from mslora_mm.adapters import (apply_adapter_file, read_adapter_file,
                                save_adapter_file)
from mslora_mm.cli import add_allow_other_base, load_config
from mslora_mm.core.mslora import is_adapter_key


def build_model(config: str, cfg_options=None):
    cfg = load_config(config, cfg_options)
    return cfg, MODELS.build(cfg.model)


def export(args) -> None:
    cfg, model = build_model(args.config, args.cfg_options)
    ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu',
                           strict=True)
    classes = (ckpt.get('meta', {}).get('dataset_meta') or {}).get('classes')
    save_adapter_file(model, args.out, cfg=cfg,
                      adapters_only=args.adapters_only, classes=classes)
    inspect(argparse.Namespace(file=args.out))


def merge(args) -> None:
    cfg, model = build_model(args.config, args.cfg_options)
    meta = apply_adapter_file(model, args.file, args.allow_other_base)
    torch.save({'meta': {'mslora_adapter_file': osp.abspath(args.file),
                         'dataset_meta': {'classes': meta.classes}},
                'state_dict': model.state_dict()}, args.out)
    print(f'wrote {args.out}: the base backbone\'s weights and {args.file} '
          'in one checkpoint of the MSLoRA model (adapters kept as modules: '
          'MSLoRA is nonlinear and cannot be folded into the weights); '
          'mmdet\'s tools load it with the same config (load_from)')


def inspect(args) -> None:
    tensors, meta = read_adapter_file(args.file)
    groups = {}
    for key, value in tensors.items():
        group = 'adapters' if is_adapter_key(key) else key.split('.')[0]
        n, b = groups.get(group, (0, 0))
        groups[group] = (n + value.numel(),
                         b + value.numel() * value.element_size())
    size = osp.getsize(args.file)
    print(f'{args.file}: {size / 2**20:.2f} MiB, {len(tensors)} tensors')
    for key, value in asdict(meta).items():
        if key == 'base_tensors' and value:  # one hash per frozen tensor
            value = f'{len(value)} frozen backbone tensors hashed'
        print(f'  {key}: {json.dumps(value)}')
    for group, (n, b) in sorted(groups.items()):
        print(f'  {group:<12} {n / 1e6:8.3f}M params {b / 2**20:8.2f} MiB')
    full = meta.full_state_dict_bytes
    backbone = meta.backbone_state_dict_bytes
    if full:
        print(f'  size vs full checkpoint: {100 * size / full:.2f}%')
    if backbone:
        print(f'  size vs backbone: {100 * size / backbone:.2f}%')


def main():
    parser = argparse.ArgumentParser(description='MSLoRA adapter files')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('export', help='checkpoint -> adapter file')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', required=True)
    p.add_argument('--adapters-only', action='store_true',
                   help='backbone adapters only (no neck and heads)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    p.set_defaults(func=export)
    p = sub.add_parser(
        'merge', help='base backbone + adapter file -> one .pth checkpoint '
        'of the same MSLoRA model (the adapters are not folded into the '
        'weights: MSLoRA is nonlinear)')
    p.add_argument('config')
    p.add_argument('file')
    p.add_argument('--out', required=True)
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_allow_other_base(p)
    p.set_defaults(func=merge)
    p = sub.add_parser('inspect', help='metadata and tensor summary')
    p.add_argument('file')
    p.set_defaults(func=inspect)
    args = parser.parse_args()
    args.func(args)


if __name__ == '__main__':
    main()
