"""Correctness checks and the cost table on one CUDA device, in at most
about 5 minutes, with PyTorch, torchvision and ``mslora_mm.core`` alone (no
mm* package needed):

    python tools/analysis/gpu_check.py [--json OUT] [--sections ...]
    python tools/analysis/gpu_check.py --device cpu --quick   # toy sizes

Sections (``mslora_mm/analysis/gpu/``): MSLoRA CUDA vs CPU (fp32,
TF32 off) per option set; fp16 (GradScaler) and bf16 train steps of
ResNet-50 and Swin-T with MSLoRA against fp32; the frozen layers against
stock autograd (values, dtypes, memory formats); Swin's masked window
attention under each SDPA backend; a 1-process NCCL DDP step; graph breaks
of an MSLoRA train step under ``torch.compile``; the ResNet-50 cost table
(full, floor, MSLoRA 'auto' and each speed option flipped, LoRA r=16; fp32
and AMP); the ``kernel='triton'`` adapter against the stock path at
ResNet-50's and Swin-T's adapter shapes (fp32/fp16/bf16), its kernels' times
and bandwidth beside the card's copy rate, the cost table compiled and on
Swin-T, and inference against the frozen body. CUDA-only parts say so on
CPU; the Triton sections run there in Triton's interpreter when
``TRITON_INTERPRET=1`` is set (the dry run). Exits 1 if a check fails.
"""
import argparse
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))  # the repository, where the package is not installed
from mslora_mm.analysis.gpu.sections import (COST_SECTIONS,  # noqa: E402
                                             SECTIONS, run_all)


def _mb(value) -> str:
    return '-' if value is None else f'{value:.0f}' if value > 10 else \
        f'{value:.2f}'


def print_cost_table(table: dict) -> None:
    """One line per mode and precision: the step, its split, the peak
    memory and the ratios to full fine-tuning ('-': not measured on CPU)."""
    for precision, rows in table.items():
        print(f'{precision:<5} {"mode":<22}{"step s":>8}{"fwd":>8}{"bwd":>8}'
              f'{"optim":>8}{"peak MB":>9}{"time/full":>10}{"mem/full":>9}')
        for mode, r in rows.items():
            print(f'{"":<6}{mode:<22}{r["train_step_s"]:>8.3f}'
                  f'{r["forward_s"]:>8.3f}{r["backward_s"]:>8.3f}'
                  f'{r["optimizer_s"]:>8.3f}{_mb(r["peak_memory_mb"]):>9}'
                  f'{r["time_vs_full"]:>10.2f}{_mb(r["memory_vs_full"]):>9}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--quick', action='store_true',
                        help='toy sizes (the CPU self-test)')
    parser.add_argument('--sections', nargs='+', choices=list(SECTIONS))
    parser.add_argument('--json', metavar='OUT', help='write every result')
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('gpu_check: no CUDA device here; run with '
                         '--device cpu --quick to check the tool itself')
    results = run_all(device, args.quick, args.sections)
    for name in COST_SECTIONS:
        if results.get(name, {}).get('table'):
            print(name)
            print_cost_table(results[name]['table'])
    for backbone, rows in results.get('inference', {}).get('table',
                                                          {}).items():
        for mode, r in rows.items():
            print(f'inference {backbone:<9}{mode:<15}{r["forward_s"]:>8.4f} s'
                  f'{r["time_vs_frozen"]:>7.2f}x frozen')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, default=str)
        print(f'wrote {args.json}')
    failed = [k for k, v in results.items()
              if isinstance(v, dict) and v.get('ok') is False]
    if failed:
        raise SystemExit(f'gpu_check: failed: {", ".join(failed)}')


if __name__ == '__main__':
    main()
