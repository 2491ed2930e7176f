"""Training/inference cost of MSLoRA vs full fine-tuning and a frozen backbone.

    python tools/analysis/benchmark.py CONFIG [--img-size 512] [--batch 2]
        [--iters 5] [--repeats 1] [--modes ...] [--json]

Each mode runs in its own process, on the config's detector:
  full    backbone without adapters, every parameter trained
  frozen  backbone without adapters, frozen (neck and heads train)
  mslora  the config as is
  floor   the mslora backbone's frozen body without adapters (frozen by
          mslora_mm.models.freezing.freeze_pretrained), gradients flowing
          back through it from its first stage: what any adapter inside the
          backbone pays before its own cost (mslora - floor = adapters)
and reports the median train step (forward, backward, AdamW step), the
process's peak memory (RSS on CPU, max_memory_allocated on CUDA) and the
median inference time, then the ratios mslora_vs_full_time,
mslora_vs_full_memory, mslora_vs_frozen_infer_time and the bounds
floor_vs_full_time, floor_vs_full_memory. With --repeats R every mode runs
in R processes, in interleaved rounds (a slow spell of a shared machine hits
all modes alike), and each metric is the median over them.
"""
import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time

MODES = ('full', 'frozen', 'mslora', 'floor')

METRICS = ('train_step_s', 'peak_memory_mb', 'infer_s')
RATIOS = {  # key: (mode, relative to mode, metric)
    'mslora_vs_full_time': ('mslora', 'full', 'train_step_s'),
    'mslora_vs_full_memory': ('mslora', 'full', 'peak_memory_mb'),
    'mslora_vs_frozen_infer_time': ('mslora', 'frozen', 'infer_s'),
    'floor_vs_full_time': ('floor', 'full', 'train_step_s'),
    'floor_vs_full_memory': ('floor', 'full', 'peak_memory_mb'),
}


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
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--modes', nargs='+', choices=MODES, default=MODES,
                        help='modes to run (default: all; full, frozen and '
                        'mslora are needed for the ratios)')
    parser.add_argument('--mode', choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def backbone_for(mode: str, backbone: dict) -> dict:
    """The config's backbone: as configured for ``mslora``, the adapter-free
    backbone behind it (asked of the MSLoRA mechanism) for the others."""
    if mode == 'mslora':
        return backbone
    from mslora_mm.models.injection import plain_backbone_config
    return plain_backbone_config(backbone)


def first_adapted_module(backbone_cfg: dict) -> str:
    """Name of the module that hosts the backbone's first adapter (the
    first stage's first block): the floor's gradients flow back to it."""
    from mmdet.registry import MODELS
    from mslora_mm.models import adapter_modules
    cfg = copy.deepcopy(backbone_cfg)
    cfg.pop('init_cfg', None)
    cfg.get('backbone', {}).pop('init_cfg', None)
    name = next((n for n, _ in adapter_modules(MODELS.build(cfg))), None)
    if name is None:
        raise TypeError('benchmark mode floor: the config\'s backbone has no '
                        'MSLoRA adapters; leave it out: --modes full frozen')
    return name.rsplit('.', 1)[0]


def require_input_grad(module, args):
    return (args[0].detach().requires_grad_(), *args[1:])


def peak_memory_mb(device) -> float:
    import torch
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, device) -> float:
    import torch
    if device.type == 'cuda':
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def worker(args) -> dict:
    import torch
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mslora_mm.cli import load_config
    from mslora_mm.models.freezing import freeze_pretrained

    cfg = load_config(args.config, args.cfg_options)
    adapted_cfg = cfg.model.backbone
    cfg.model.backbone = backbone_for(args.mode, adapted_cfg)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.get('backbone', {}).pop('init_cfg', None)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device)
    if args.mode == 'full':
        for p in model.parameters():
            p.requires_grad_(True)
    elif args.mode == 'frozen':
        model.backbone.requires_grad_(False)
    elif args.mode == 'floor':  # the MSLoRA backbone's freezing, no adapters
        freeze_pretrained(model.backbone)
        model.backbone.get_submodule(first_adapted_module(
            adapted_cfg)).register_forward_pre_hook(require_input_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    packed = demo_mm_inputs(args.batch, [[3, args.img_size, args.img_size]] *
                            args.batch, num_items=[5] * args.batch,
                            num_classes=80, with_mask=True)
    data = model.data_preprocessor(packed, True)
    model.train()
    if args.mode in ('frozen', 'floor'):
        model.backbone.eval()

    def train_step():
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train = [timed(train_step, device)
             for _ in range(args.warmup + args.iters)][args.warmup:]
    memory = peak_memory_mb(device)
    model.eval()
    infer_data = model.data_preprocessor(packed, False)

    def infer():
        with torch.no_grad():
            model(**infer_data, mode='predict')

    infer_times = [timed(infer, device)
                   for _ in range(args.warmup + args.iters)][args.warmup:]
    return dict(mode=args.mode, device=str(device),
                train_step_s=statistics.median(train),
                peak_memory_mb=memory,
                infer_s=statistics.median(infer_times),
                trainable_params=sum(p.numel() for p in params))


def run_mode(argv: list, mode: str) -> dict:
    """One mode in a fresh process, given this command's own arguments
    ``argv``; its result dict."""
    cmd = [sys.executable, __file__, *argv, '--mode', mode]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('BENCHMARK ')]
    if proc.returncode != 0 or not lines:
        sys.exit(f'benchmark mode {mode} failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1][len('BENCHMARK '):])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.mode:
        print('BENCHMARK ' + json.dumps(worker(args)))
        return
    runs = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):  # interleaved: slow spells hit all modes
        for mode in args.modes:
            runs[mode].append(run_mode(argv, mode))
    results = {
        mode: dict(rs[0], **{key: statistics.median(r[key] for r in rs)
                             for key in METRICS})
        for mode, rs in runs.items()
    }
    summary = dict(config=args.config, img_size=args.img_size,
                   batch=args.batch, iters=args.iters, repeats=args.repeats,
                   modes=results)
    if args.repeats > 1:
        summary['runs'] = runs
    for key, (mode, base, metric) in RATIOS.items():
        if mode in results and base in results:
            summary[key] = (results[mode][metric] / results[base][metric])
    if args.json:
        print(json.dumps(summary))
        return
    print(f'{"mode":<8}{"train step":>12}{"peak memory":>14}'
          f'{"inference":>12}{"trainable":>12}')
    for mode, r in results.items():
        print(f'{mode:<8}{r["train_step_s"]:>11.3f}s'
              f'{r["peak_memory_mb"]:>11.0f} MB{r["infer_s"]:>11.3f}s'
              f'{r["trainable_params"] / 1e6:>11.2f}M')
    if args.repeats > 1:
        for mode, rs in runs.items():
            steps = ' '.join(f'{r["train_step_s"]:.2f}' for r in rs)
            print(f'{mode} train steps per run: {steps}')
    for key in RATIOS:
        if key in summary:
            print(f'{key}: {summary[key]:.2f}')


if __name__ == '__main__':
    main()
