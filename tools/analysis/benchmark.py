"""Training/inference cost of MSLoRA vs full fine-tuning and a frozen backbone.

    python tools/analysis/benchmark.py CONFIG [--img-size 512] [--batch 2]
        [--iters 5] [--repeats 1] [--modes ...] [--backbone-only] [--json]
    python tools/analysis/benchmark.py CONFIG --per-site [--img-size ...]

Each mode (full, frozen, mslora, floor, peft-lora:
mslora_mm.analysis.cost.benchmark) runs in its own process, on the config's
detector (or, with --backbone-only, its backbone alone with the loss
sum(mean(out ** 2))), and the tool reports the median train step (forward,
backward, AdamW step) and each of those phases, the process's peak memory (RSS on CPU, max_memory_allocated
on CUDA), the median inference time and the backbone's arithmetic on the
batch (GFLOP of its convolutions and matmuls in one forward, which machine
noise does not move: mslora - full = the adapters'), then the ratios of
RATIOS. With --repeats R every mode runs in R processes, in interleaved
rounds (a slow spell of a shared machine hits all modes alike), and each
metric is the median over them. --timeline samples the memory (RSS / CUDA
allocated) every 2 ms during the last step and says where it peaked: the
phase and the last module that began its forward or backward (the
detector's neck and heads, the backbone's adapter hosts).
"""
import argparse
import json
import os.path as osp
import sys
from dataclasses import fields

from mslora_mm.analysis.cost import benchmark as cost


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='MSLoRA cost benchmark')
    parser.add_argument('config')
    parser.add_argument('--img-size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=1,
                        help='processes per mode, run in interleaved rounds; '
                        'each metric is the median over them')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time the backbone alone (loss: the sum of its '
                        'outputs\' mean squares), without neck and heads')
    parser.add_argument('--peft-rank', type=int, default=16,
                        help='rank of the peft-lora peer')
    parser.add_argument('--timeline', action='store_true',
                        help='sample memory during the last step and report '
                        'where it peaked')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision as training runs it: fp16 '
                        'autocast with mmengine\'s AmpOptimWrapper loss '
                        'scaling on CUDA, bf16 autocast on CPU')
    parser.add_argument('--per-site', action='store_true',
                        help='instead: what each adapter costs on its own, '
                        'its train step alone on the feature its site gets '
                        'and its GFLOP, one Markdown row per site')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--modes', nargs='+', choices=cost.MODES,
                        help='modes to run (default: full frozen mslora '
                        'floor, and peft-lora with --backbone-only when peft '
                        'is installed; full, frozen and mslora are needed '
                        'for the ratios)')
    parser.add_argument('--mode', choices=cost.MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.modes is None:
        args.modes = list(cost.DEFAULT_MODES)
        if args.backbone_only and cost.peft_available():
            args.modes.append('peft-lora')
    if 'peft-lora' in args.modes and not cost.peft_available():
        parser.error('mode peft-lora needs Hugging Face peft: '
                     'pip install "mslora-mm[peft]"')
    return args


def cost_run(args: argparse.Namespace) -> cost.CostRun:
    """The measurement ``args`` ask for."""
    return cost.CostRun(**{f.name: getattr(args, f.name)
                           for f in fields(cost.CostRun)})


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.per_site:
        from mslora_mm.analysis.cost import site_costs
        costs = site_costs.config_site_costs(
            args.config, args.cfg_options, args.img_size, args.batch,
            args.iters, args.warmup)
        print(f'{args.config}: {args.batch} x {args.img_size}^2, median of '
              f'{args.iters} steps')
        print(site_costs.format_site_costs(costs))
        return
    if args.mode:  # one mode, in the process run_modes started
        print(cost.RESULT + json.dumps(cost.measure(cost_run(args))))
        return
    args.mode = 'mslora'
    try:
        runs = cost.run_modes(osp.abspath(__file__), argv, args.modes,
                              args.repeats)
    except RuntimeError as e:
        sys.exit(str(e))
    summary = cost.summarise(cost_run(args), runs, args.repeats)
    print(json.dumps(summary) if args.json else cost.format_summary(summary))


if __name__ == '__main__':
    main()
