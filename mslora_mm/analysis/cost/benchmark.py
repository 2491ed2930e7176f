"""What training costs per mode: MSLoRA against full fine-tuning, the frozen
backbone, the floor and the peft-LoRA peer (``tools/analysis/benchmark.py``
parses arguments and prints; docs/benchmarks.md).

Modes, each measured in its own process on the config's detector (or, with
``backbone_only``, its backbone alone with the loss ``sum(mean(out ** 2))``):
  full       backbone without adapters, every parameter trained
  frozen     backbone without adapters, frozen (neck and heads train)
  mslora     the config as is
  floor      the mslora backbone's frozen body without adapters (frozen by
             ``freeze_pretrained``), gradients flowing back through it from
             its first adapted module: what any adapter inside the backbone
             pays before its own cost (mslora - floor = adapters)
  peft-lora  Hugging Face peft's LoRA on every Conv2d/Linear of the modules
             that host MSLoRA adapters, on the stock frozen backbone
"""
import contextlib
import importlib.util
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from .measure import forward_gflop, seeded_images, timed
from .memory import MemoryTimeline, peak_memory_mb


@dataclass
class CostRun:
    """What one measurement runs: the config (with ``cfg_options``) in
    ``mode``, ``warmup`` + ``iters`` train steps on ``batch`` random images
    of ``img_size``, the backbone alone if ``backbone_only``, with ``amp``
    (fp16 + loss scaling on CUDA, bf16 on CPU), the peft peer's rank, and a
    memory ``timeline`` of the last step."""
    config: str
    mode: str = 'mslora'
    cfg_options: Optional[dict] = None
    img_size: int = 512
    batch: int = 2
    iters: int = 5
    warmup: int = 2
    backbone_only: bool = False
    peft_rank: int = 16
    timeline: bool = False
    amp: bool = False

#: the line prefix of a mode's result on its process's stdout
RESULT = 'BENCHMARK '
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
    """Whether Hugging Face peft (the peft-lora peer) is installed."""
    return importlib.util.find_spec('peft') is not None


def backbone_for(mode: str, backbone: dict) -> dict:
    """The config's backbone: as configured for ``mslora``, the adapter-free
    backbone behind it (asked of the MSLoRA mechanism) for the others."""
    if mode == 'mslora':
        return backbone
    from ...models.injection import plain_backbone_config
    return plain_backbone_config(backbone)


def adapter_hosts(backbone_cfg: dict) -> List[str]:
    """Names of the modules that host the backbone's MSLoRA adapters, in
    forward order (the first stage's first block first)."""
    from ...models.peft_lora import adapter_hosts as hosts
    from ...models.peft_lora import build_without_weights
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


def require_input_grad(module: nn.Module, args: tuple) -> tuple:
    """A forward pre-hook: the input as a leaf that requires grad."""
    return (args[0].detach().requires_grad_(), *args[1:])


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


def build_for_mode(args: CostRun, cfg) -> Tuple[nn.Module, List[Tensor]]:
    """The mode's model (the detector, or its backbone with
    ``backbone_only``) and its trainable parameters."""
    from mmdet.registry import MODELS

    from ...core import freeze_pretrained

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
        from ...models.peft_lora import add_peft_lora
        backbone = add_peft_lora(backbone, adapter_hosts(adapted_cfg),
                                 args.peft_rank)
        if not args.backbone_only:
            model.backbone = backbone
    return model, [p for p in model.parameters() if p.requires_grad]


def _segmentation_inputs(args: CostRun, model: nn.Module) -> dict:
    """Fixed random images with random label maps of the segmenter's
    classes, packed as mmseg's loaders pack them."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    size = (args.img_size, args.img_size)
    samples = []
    for _ in range(args.batch):
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size,
                                             pad_shape=size))
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, model.decode_head.num_classes, (1, *size), generator=g))
        samples.append(sample)
    images = torch.randint(0, 256, (args.batch, 3, *size), generator=g,
                           dtype=torch.uint8)
    return dict(inputs=list(images), data_samples=samples)


def detector_steps(args: CostRun, model: nn.Module, device: torch.device
                   ) -> Tuple[Callable, Callable, Callable, Tensor]:
    """(loss, set train mode, inference) callables of the detector (fixed
    random images with 5 boxes and masks each) or segmenter (random label
    maps), and the backbone's input."""
    if hasattr(model, 'decode_head'):
        packed = _segmentation_inputs(args, model)
    else:
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(
            args.batch, [[3, args.img_size, args.img_size]] * args.batch,
            num_items=[5] * args.batch, num_classes=80, with_mask=True)
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


def backbone_steps(args: CostRun, model: nn.Module, device: torch.device
                   ) -> Tuple[Callable, Callable, Callable, Tensor]:
    """The same for the backbone alone, on fixed random images."""
    x = seeded_images(args.batch, args.img_size, device)

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
    (by name: ``mslora_mm.optim`` registers the CPU one)."""
    from mmengine.registry import OPTIM_WRAPPERS
    if not amp:
        cfg = dict(type='OptimWrapper')
    elif device.type == 'cuda':
        cfg = dict(type='AmpOptimWrapper', dtype='float16',
                   loss_scale='dynamic')
    else:
        cfg = dict(type='CPUAmpOptimWrapper')
    return OPTIM_WRAPPERS.build(cfg, default_args=dict(optimizer=optimizer))


def amp_context(amp: bool, wrapper, model, device):
    """The forward's precision context (a callable): the wrapper's
    ``optim_context``, or plain autocast for a mode without trainable
    parameters."""
    if wrapper is not None:
        return lambda: wrapper.optim_context(model)
    if amp:
        dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
        return lambda: torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext


def measure(args: CostRun) -> Dict:
    """Train steps of one mode, timed phase by phase (medians), the peak
    memory, the median inference time, the backbone's GFLOP and the
    trainable parameters."""
    from ...cli import load_config

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
    seen: Dict[str, str] = {}  # the backbone's output dtype (autocast)

    def record_dtype(module, inputs, out) -> None:
        first = out[0] if isinstance(out, (list, tuple)) else out
        seen.setdefault('dtype', str(first.dtype))

    backbone = model if args.backbone_only else model.backbone
    watch = backbone.register_forward_hook(record_dtype)
    train_mode()
    times = dict(forward_s=[], backward_s=[], optimizer_s=[],
                 train_step_s=[])
    counts = dict(backward_steps=0, optimizer_steps=0)  # of the timed ones
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
                counts['backward_steps'] += i >= args.warmup

        def step():
            if wrapper is not None:
                wrapper.step()
                counts['optimizer_steps'] += i >= args.warmup

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
    memory = peak_memory_mb(device)
    watch.remove()
    model.eval()
    infer_times = [timed(infer, device)
                   for _ in range(args.warmup + args.iters)][args.warmup:]
    extra = dict(timeline_peak=timeline.peak()) if timeline else {}
    return dict(mode=args.mode, device=str(device), amp=args.amp and (
        'float16' if device.type == 'cuda' else 'bfloat16'), **extra,
                backbone_dtype=seen.get('dtype'), **counts,
                optim_wrapper=type(wrapper).__name__ if wrapper else None,
                peak_memory_mb=memory,
                infer_s=statistics.median(infer_times),
                backbone_gflop=forward_gflop(lambda: (
                    model if args.backbone_only else model.backbone)(inputs)),
                trainable_params=sum(p.numel() for p in params),
                **{key: statistics.median(ts) for key, ts in times.items()})


def run_mode(script: str, argv: Sequence[str], mode: str) -> Dict:
    """One mode in a fresh process: ``script`` (the tool) with its own
    arguments ``argv`` and ``--mode``; its result."""
    cmd = [sys.executable, script, *argv, '--mode', mode]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'benchmark mode {mode} failed:\n'
                           f'{proc.stderr[-3000:]}')
    return json.loads(lines[-1][len(RESULT):])


def run_modes(script: str, argv: Sequence[str], modes: Sequence[str],
              repeats: int) -> Dict[str, List[Dict]]:
    """Each mode in ``repeats`` processes, in interleaved rounds (a slow
    spell of a shared machine hits all modes alike)."""
    runs: Dict[str, List[Dict]] = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            runs[mode].append(run_mode(script, argv, mode))
    return runs


def summarise(args: CostRun, runs: Dict[str, List[Dict]],
              repeats: int) -> Dict:
    """Each mode's medians over its runs and the ``RATIOS`` between
    modes."""
    results = {
        mode: dict(rs[0], **{key: statistics.median(r[key] for r in rs)
                             for key in METRICS})
        for mode, rs in runs.items()}
    summary = dict(config=args.config, img_size=args.img_size, amp=args.amp,
                   batch=args.batch, iters=args.iters, repeats=repeats,
                   backbone_only=args.backbone_only, modes=results)
    if repeats > 1:
        summary['runs'] = runs
    for key, (mode, base, metric) in RATIOS.items():
        if mode in results and base in results:
            summary[key] = results[mode][metric] / results[base][metric]
    return summary


def format_summary(summary: Dict) -> str:
    """The summary as the tool prints it: one row per mode, the runs'
    step times, where memory peaked, the ratios."""
    lines = [f'{"mode":<10}{"train step":>12}{"forward":>10}{"backward":>10}'
             f'{"AdamW":>8}{"peak memory":>14}{"inference":>12}'
             f'{"backbone GFLOP":>16}{"trainable":>12}']
    for mode, r in summary['modes'].items():
        lines.append(
            f'{mode:<10}{r["train_step_s"]:>11.3f}s{r["forward_s"]:>9.3f}s'
            f'{r["backward_s"]:>9.3f}s{r["optimizer_s"]:>7.3f}s'
            f'{r["peak_memory_mb"]:>11.0f} MB'
            f'{r["infer_s"]:>11.3f}s{r["backbone_gflop"]:>16.1f}'
            f'{r["trainable_params"] / 1e6:>11.2f}M')
    runs = summary.get('runs', {m: [r] for m, r in summary['modes'].items()})
    if 'runs' in summary:
        for mode, rs in runs.items():
            steps = ' '.join(f'{r["train_step_s"]:.2f}' for r in rs)
            lines.append(f'{mode} train steps per run: {steps}')
    for mode, rs in runs.items():
        for r in rs:
            if 'timeline_peak' in r:
                pk = r['timeline_peak']
                lines.append(
                    f'{mode} memory peak (last step): {pk["mb"]:.0f} MB at '
                    f'{pk["at_s"]:.2f} s of {pk["of_s"]:.2f} s, after '
                    f'{" > ".join(pk["after"])}')
    lines += [f'{key}: {summary[key]:.2f}' for key in RATIOS
              if key in summary]
    return '\n'.join(lines)
