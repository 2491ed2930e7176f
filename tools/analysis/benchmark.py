"""Training/inference cost of MSLoRA vs full fine-tuning and a frozen backbone.

    python tools/analysis/benchmark.py CONFIG [--img-size 512] [--batch 2]
        [--iters 5] [--repeats 1] [--modes ...] [--backbone-only] [--json]

Each mode runs in its own process, on the config's detector (or, with
--backbone-only, its backbone alone with the loss sum(mean(out ** 2))):
  full       backbone without adapters, every parameter trained
  frozen     backbone without adapters, frozen (neck and heads train)
  mslora     the config as is
  floor      the mslora backbone's frozen body without adapters (frozen by
             mslora_mm.core.freeze_pretrained), gradients flowing
             back through it from its first stage: what any adapter inside
             the backbone pays before its own cost (mslora - floor = adapters)
  peft-lora  a peer: Hugging Face peft's LoRA (rank --peft-rank) on every
             Conv2d/Linear of the modules that host MSLoRA adapters, on the
             stock frozen backbone (needs ``pip install mslora-mm[peft]``)
and reports the median train step (forward, backward, AdamW step) and each
of those phases, the process's peak memory (RSS on CPU, max_memory_allocated
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
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Tuple

MODES = ('full', 'frozen', 'mslora', 'floor', 'peft-lora')
DEFAULT_MODES = ('full', 'frozen', 'mslora', 'floor')

METRICS = ('train_step_s', 'forward_s', 'backward_s', 'optimizer_s',
           'peak_memory_mb', 'infer_s', 'backbone_gflop')
RATIOS = {  # key: (mode, relative to mode, metric)
    'mslora_vs_full_time': ('mslora', 'full', 'train_step_s'),
    'mslora_vs_full_memory': ('mslora', 'full', 'peak_memory_mb'),
    'mslora_vs_frozen_infer_time': ('mslora', 'frozen', 'infer_s'),
    'floor_vs_full_time': ('floor', 'full', 'train_step_s'),
    'floor_vs_full_memory': ('floor', 'full', 'peak_memory_mb'),
    'floor_vs_full_backward': ('floor', 'full', 'backward_s'),
    'mslora_vs_full_backbone_flops': ('mslora', 'full', 'backbone_gflop'),
    'mslora_vs_peft-lora_time': ('mslora', 'peft-lora', 'train_step_s'),
    'mslora_vs_peft-lora_memory': ('mslora', 'peft-lora', 'peak_memory_mb'),
    'peft-lora_vs_full_time': ('peft-lora', 'full', 'train_step_s'),
    'peft-lora_vs_full_memory': ('peft-lora', 'full', 'peak_memory_mb'),
}


def peft_available() -> bool:
    return importlib.util.find_spec('peft') is not None


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
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--modes', nargs='+', choices=MODES,
                        help='modes to run (default: full frozen mslora '
                        'floor, and peft-lora with --backbone-only when peft '
                        'is installed; full, frozen and mslora are needed '
                        'for the ratios)')
    parser.add_argument('--mode', choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.modes is None:
        args.modes = list(DEFAULT_MODES)
        if args.backbone_only and peft_available():
            args.modes.append('peft-lora')
    if 'peft-lora' in args.modes and not peft_available():
        parser.error('mode peft-lora needs Hugging Face peft: '
                     'pip install "mslora-mm[peft]"')
    return args


def backbone_for(mode: str, backbone: dict) -> dict:
    """The config's backbone: as configured for ``mslora``, the adapter-free
    backbone behind it (asked of the MSLoRA mechanism) for the others."""
    if mode == 'mslora':
        return backbone
    from mslora_mm.models.injection import plain_backbone_config
    return plain_backbone_config(backbone)


def adapter_hosts(backbone_cfg: dict) -> List[str]:
    """Names of the modules that host the backbone's MSLoRA adapters, in
    forward order (the first stage's first block first)."""
    from mslora_mm.models.peft_lora import (adapter_hosts as hosts,
                                            build_without_weights)
    try:
        return hosts(build_without_weights(backbone_cfg))
    except ValueError:
        raise TypeError('benchmark modes floor and peft-lora: the config\'s '
                        'backbone has no MSLoRA adapters; leave them out: '
                        '--modes full frozen') from None


def first_adapted_module(backbone_cfg: dict) -> str:
    """Name of the module that hosts the backbone's first adapter: the
    floor's gradients flow back to it."""
    return adapter_hosts(backbone_cfg)[0]


def require_input_grad(module, args):
    return (args[0].detach().requires_grad_(), *args[1:])


class MemoryTimeline:
    """Memory sampled every ``interval`` s in a thread (RSS from
    /proc/self/statm on CPU, allocated memory on CUDA), beside the events
    ``mark`` records: ``peak()`` says where the samples peaked."""

    def __init__(self, device, interval: float = 0.002) -> None:
        self.device, self.interval = device, interval
        self.samples: List[Tuple[float, float]] = []
        self.events: List[Tuple[float, str]] = []
        self._running = False

    def memory_mb(self) -> float:
        import torch
        if self.device.type == 'cuda':
            return torch.cuda.memory_allocated(self.device) / 2**20
        with open('/proc/self/statm') as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf('SC_PAGE_SIZE') / 2**20

    def mark(self, event: str) -> None:
        self.events.append((time.perf_counter(), event))

    def _sample(self) -> None:
        while self._running:
            self.samples.append((time.perf_counter(), self.memory_mb()))
            time.sleep(self.interval)

    def __enter__(self) -> 'MemoryTimeline':
        self.samples.clear()
        self.events.clear()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()

    def peak(self) -> Dict:
        """``{'mb', 'at_s', 'of_s', 'after'}``: the highest sample, its
        time and the step's length (from the first event), and the events
        up to it (the last two)."""
        start = self.events[0][0] if self.events else self.samples[0][0]
        end = self.events[-1][0] if self.events else self.samples[-1][0]
        at, mb = max(self.samples, key=lambda s: s[1])
        before = [name for t, name in self.events if t <= at]
        return dict(mb=mb, at_s=at - start, of_s=end - start,
                    after=before[-2:])


def watch_modules(model, timeline: MemoryTimeline, hosts: List[str],
                  backbone_only: bool) -> None:
    """Mark in ``timeline`` the forward of the detector's top-level parts
    and the forward and backward of the backbone's modules ``hosts``."""
    backbone = model if backbone_only else model.backbone
    if not backbone_only:
        for name, module in model.named_children():
            if name not in ('backbone', 'data_preprocessor'):
                module.register_forward_pre_hook(
                    lambda *_, n=name: timeline.mark(f'forward {n}'))
    for name in hosts:
        module = backbone.get_submodule(name)
        module.register_forward_pre_hook(
            lambda *_, n=name: timeline.mark(f'forward {n}'))
        module.register_full_backward_pre_hook(
            lambda *_, n=name: timeline.mark(f'backward {n}'))


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


def backbone_gflop(backbone, inputs) -> float:
    """The arithmetic of one forward of ``backbone`` on ``inputs`` in
    GFLOP: 2 per multiply-add of its convolutions and matmuls (grouped ones
    included), as torch's ``FlopCounterMode`` counts them. Adapters count
    with PyTorch's layers: the counter cannot see inside the native kernel
    of ``fused_branches``, which does the same arithmetic."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from mslora_mm.models import adapter_modules
    adapters = [adapter for _, adapter in adapter_modules(backbone)]
    settings = [adapter.fused_branches for adapter in adapters]
    counter = FlopCounterMode(display=False)
    try:
        for adapter in adapters:
            adapter.fused_branches = False
        with torch.no_grad(), counter:
            backbone(inputs)
    finally:
        for adapter, setting in zip(adapters, settings):
            adapter.fused_branches = setting
    return counter.get_total_flops() / 1e9


def build_for_mode(args, cfg):
    """The mode's model (the detector, or its backbone with
    --backbone-only) and its trainable parameters."""
    import torch
    from mmdet.registry import MODELS
    from mslora_mm.core import freeze_pretrained

    adapted_cfg = cfg.model.backbone
    cfg.model.backbone = backbone_for(args.mode, adapted_cfg)
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.get('backbone', {}).pop('init_cfg', None)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.backbone if args.backbone_only
                         else cfg.model)
    backbone = model if args.backbone_only else model.backbone
    if args.mode == 'full':
        model.requires_grad_(True)
    elif args.mode == 'frozen':
        backbone.requires_grad_(False)
    elif args.mode == 'floor':  # the MSLoRA backbone's freezing, no adapters
        freeze_pretrained(backbone)
        backbone.get_submodule(first_adapted_module(
            adapted_cfg)).register_forward_pre_hook(require_input_grad)
    elif args.mode == 'peft-lora':
        from mslora_mm.models.peft_lora import add_peft_lora
        backbone = add_peft_lora(backbone, adapter_hosts(adapted_cfg),
                                 args.peft_rank)
        if not args.backbone_only:
            model.backbone = backbone
    return model, [p for p in model.parameters() if p.requires_grad]


def detector_steps(args, model, device) -> Tuple[Callable, Callable,
                                                 Callable, 'torch.Tensor']:
    """(loss, set train mode, inference) callables of the detector on fixed
    random images with 5 boxes and masks each, and the backbone's input."""
    import torch
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(args.batch, [[3, args.img_size, args.img_size]] *
                            args.batch, num_items=[5] * args.batch,
                            num_classes=80, with_mask=True)
    data = model.data_preprocessor(packed, True)
    infer_data = model.data_preprocessor(packed, False)

    def loss():
        return model.parse_losses(model(**data, mode='loss'))[0]

    def train_mode():
        model.train()
        if args.mode in ('frozen', 'floor'):
            model.backbone.eval()

    def infer():
        with torch.no_grad():
            model(**infer_data, mode='predict')

    return loss, train_mode, infer, data['inputs']


def backbone_steps(args, model, device) -> Tuple[Callable, Callable,
                                                 Callable, 'torch.Tensor']:
    """The same for the backbone alone, on fixed random images."""
    import torch
    x = torch.randn(args.batch, 3, args.img_size, args.img_size,
                    generator=torch.Generator().manual_seed(0)).to(device)

    def loss():
        return sum(out.float().square().mean() for out in model(x))

    def train_mode():
        model.train()
        if args.mode in ('frozen', 'floor'):
            model.eval()

    def infer():
        with torch.no_grad():
            model(x)

    return loss, train_mode, infer, x


def amp_optim_wrapper(optimizer, device, amp: bool = True):
    """The optimizer wrapper training uses: with ``amp``, mmengine's
    ``AmpOptimWrapper`` (fp16, dynamic loss scaling) on CUDA, the plugin's
    ``CPUAmpOptimWrapper`` (bf16) on CPU; else mmengine's ``OptimWrapper``.
    """
    from mmengine.optim import AmpOptimWrapper, OptimWrapper
    from mslora_mm.optim.amp import CPUAmpOptimWrapper
    if not amp:
        return OptimWrapper(optimizer=optimizer)
    if device.type == 'cuda':
        return AmpOptimWrapper(optimizer=optimizer, dtype='float16',
                               loss_scale='dynamic')
    return CPUAmpOptimWrapper(optimizer=optimizer)


def amp_context(amp: bool, wrapper, model, device):
    """The forward's precision context (a callable): the wrapper's
    ``optim_context``, or plain autocast for a mode without trainable
    parameters."""
    import contextlib
    import torch
    if wrapper is not None:
        return lambda: wrapper.optim_context(model)
    if amp:
        dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
        return lambda: torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext


def worker(args) -> dict:
    import torch
    from mslora_mm.cli import load_config

    cfg = load_config(args.config, args.cfg_options)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    hosts = adapter_hosts(cfg.model.backbone) if args.timeline else []
    model, params = build_for_mode(args, cfg)
    model.to(device)
    steps = backbone_steps if args.backbone_only else detector_steps
    loss_fn, train_mode, infer, inputs = steps(args, model, device)
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05) \
        if params else None
    wrapper = amp_optim_wrapper(optimizer, device, args.amp) \
        if optimizer else None
    precision = amp_context(args.amp, wrapper, model, device)
    timeline = MemoryTimeline(device) if args.timeline else None
    if timeline is not None:
        watch_modules(model, timeline, hosts, args.backbone_only)
    train_mode()
    times = dict(forward_s=[], backward_s=[], optimizer_s=[],
                 train_step_s=[])
    for i in range(args.warmup + args.iters):
        holder = {}

        def forward():
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            with precision():
                holder['loss'] = loss_fn()

        def backward():  # none in backbone-only frozen: nothing needs it
            if holder['loss'].requires_grad:
                wrapper.backward(holder['loss']) if wrapper else \
                    holder['loss'].backward()

        def step():
            if wrapper is not None:
                wrapper.step()

        last = i == args.warmup + args.iters - 1
        if timeline is not None and last:
            with timeline:
                phases = []
                for name, fn in (('forward', forward), ('backward', backward),
                                 ('optimizer', step)):
                    timeline.mark(name)
                    phases.append(timed(fn, device))
                timeline.mark('end')
        else:
            phases = [timed(fn, device) for fn in (forward, backward, step)]
        if i >= args.warmup:
            for key, value in zip(('forward_s', 'backward_s', 'optimizer_s'),
                                  phases):
                times[key].append(value)
            times['train_step_s'].append(sum(phases))
    from mslora_mm.analysis.memory import peak_memory_mb
    memory = peak_memory_mb(device)
    model.eval()
    infer_times = [timed(infer, device)
                   for _ in range(args.warmup + args.iters)][args.warmup:]
    extra = dict(timeline_peak=timeline.peak()) if timeline else {}
    return dict(mode=args.mode, device=str(device), amp=args.amp and (
        'float16' if device.type == 'cuda' else 'bfloat16'), **extra,
                peak_memory_mb=memory,
                infer_s=statistics.median(infer_times),
                backbone_gflop=backbone_gflop(
                    model if args.backbone_only else model.backbone, inputs),
                trainable_params=sum(p.numel() for p in params),
                **{key: statistics.median(ts) for key, ts in times.items()})


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
    summary = dict(config=args.config, img_size=args.img_size, amp=args.amp,
                   batch=args.batch, iters=args.iters, repeats=args.repeats,
                   backbone_only=args.backbone_only, modes=results)
    if args.repeats > 1:
        summary['runs'] = runs
    for key, (mode, base, metric) in RATIOS.items():
        if mode in results and base in results:
            summary[key] = (results[mode][metric] / results[base][metric])
    if args.json:
        print(json.dumps(summary))
        return
    print(f'{"mode":<10}{"train step":>12}{"forward":>10}{"backward":>10}'
          f'{"AdamW":>8}{"peak memory":>14}{"inference":>12}'
          f'{"backbone GFLOP":>16}{"trainable":>12}')
    for mode, r in results.items():
        print(f'{mode:<10}{r["train_step_s"]:>11.3f}s{r["forward_s"]:>9.3f}s'
              f'{r["backward_s"]:>9.3f}s{r["optimizer_s"]:>7.3f}s'
              f'{r["peak_memory_mb"]:>11.0f} MB'
              f'{r["infer_s"]:>11.3f}s{r["backbone_gflop"]:>16.1f}'
              f'{r["trainable_params"] / 1e6:>11.2f}M')
    if args.repeats > 1:
        for mode, rs in runs.items():
            steps = ' '.join(f'{r["train_step_s"]:.2f}' for r in rs)
            print(f'{mode} train steps per run: {steps}')
    for mode, rs in runs.items():
        for r in rs:
            if 'timeline_peak' in r:
                pk = r['timeline_peak']
                print(f'{mode} memory peak (last step): {pk["mb"]:.0f} MB at '
                      f'{pk["at_s"]:.2f} s of {pk["of_s"]:.2f} s, after '
                      f'{" > ".join(pk["after"])}')
    for key in RATIOS:
        if key in summary:
            print(f'{key}: {summary[key]:.2f}')


if __name__ == '__main__':
    main()
