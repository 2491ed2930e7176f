"""Checks and a cost table for one CUDA device, with PyTorch, torchvision
and ``mslora_mm.core`` alone (``tools/analysis/gpu_check.py``).

Every section returns ``{'ok': bool | None, ...}`` (None: skipped, with a
``skipped`` reason). ``quick`` runs each at toy sizes (the CPU test of the
tool itself).
"""
import copy
import math
import os
import time
from contextlib import nullcontext
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...core import (MSLoRA, adapter_modules, freeze_pretrained,
                    inject_adapters)
from ...core.frozen_layers import (CUDA_SDPA_BACKENDS, FrozenBatchNorm2d,
                                  FrozenConv2d, FrozenLinear, MaskReLU)
from ...core.runtime import (DEFAULT, DEVICE_DEFAULTS, OPTIONS, STOCK,
                            runtime, runtime_option)
from .triton_check import triton_kernels, triton_vs_stock

Result = Dict[str, object]
#: (MSLoRA arguments, runtime options) compared between CUDA and CPU
OPTION_SETS = {
    'stock': ({}, STOCK),
    'channels_last': ({}, dict(STOCK, channels_last=True)),
    'with_cp': (dict(with_cp=True), STOCK),
    'bands': (dict(with_cp=True), dict(STOCK, band_rows=8)),  # recompute's
    'all': (dict(with_cp=True), dict(STOCK, channels_last=True,
                                     band_rows=8)),
}


def skipped(why: str) -> Result:
    return dict(ok=None, skipped=why)


def _randomize(module: nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Every parameter random (norm weights near 1), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            is_scale = 'norm' in name and name.endswith('weight')
            p.copy_(torch.randn(p.shape, generator=g) * std + is_scale)


def _rel(a: Tensor, b: Tensor) -> float:
    """``|a - b| / |b|`` over all elements, in float64."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def mslora_step(x: Tensor, device: Union[str, torch.device], options: dict,
                settings: dict) -> List[Tensor]:
    """A seeded ``MSLoRA(64, rank=32, **options)`` on ``device`` under the
    runtime ``settings``: ``[output, grad of x, grads of its parameters]``
    of ``out.pow(2).mean()``. ``x`` (``(B, 64, H, W)``) is left as it is."""
    m = MSLoRA(64, rank=32, **options)
    _randomize(m)
    m.to(device)
    xd = x.detach().to(device).requires_grad_()  # a leaf of its own
    with runtime(**settings):
        out = m(xd)
        out.pow(2).mean().backward()
    return [out, xd.grad] + [p.grad for p in m.parameters()]


def mslora_cuda_vs_cpu(device: torch.device, quick: bool) -> Result:
    """MSLoRA's output and gradients on ``device`` against the CPU, fp32
    with TF32 off, for every option set."""
    if device.type != 'cuda':
        return skipped('needs CUDA')
    tf32 = (torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    worst = {}
    try:
        for name, (options, settings) in OPTION_SETS.items():
            errors = []
            x = torch.randn(2, 64, 24, 20, generator=torch.Generator(
            ).manual_seed(1))
            results = [mslora_step(x, dev, options, settings)
                       for dev in ('cpu', device)]
            for cpu, cuda in zip(*results):
                errors.append(_rel(cuda.cpu(), cpu))
            worst[name] = max(errors)
    finally:
        torch.backends.cuda.matmul.allow_tf32, \
            torch.backends.cudnn.allow_tf32 = tf32
    return dict(ok=max(worst.values()) < 1e-4, max_rel_error=worst)


def calibrated(model: nn.Module, size: int = 64) -> nn.Module:
    """``model`` with BatchNorm statistics of one random batch, so that a
    randomly initialised body keeps activations in range as a pretrained
    one does (fp16 overflows otherwise)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None  # a cumulative average: this batch's statistics
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def resnet50_mslora(rank: int = 64, **options) -> nn.Module:
    """torchvision's ResNet-50 (zero-initialised residual branches, as
    mmdet initialises them, and calibrated statistics: a random body whose
    gradients are not chaotic, as a pretrained one's) with MSLoRA on every
    Bottleneck's output, frozen but for the adapters."""
    import torchvision
    model = calibrated(torchvision.models.resnet50(zero_init_residual=True))
    inject_adapters(model, ['layer*.*'], dict(rank=rank, **options))
    return freeze_pretrained(model)


def swin_t_mslora(rank: int = 32, **options) -> nn.Module:
    """torchvision's Swin-T with MSLoRA on every block's ``(B, H, W, C)``
    output, frozen but for the adapters."""
    import torchvision
    model = torchvision.models.swin_t()
    inject_adapters(model, [dict(pattern='features.[1357].*', layout='nhwc',
                                 pre_norm=True)], dict(rank=rank, **options),
                    probe_size=64)
    return freeze_pretrained(model)


def _amp(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype else \
        nullcontext()


def _adapter_grads(model: nn.Module, x: Tensor, dtype, scaler) -> Tensor:
    """The adapters' gradient of one step, flattened; with a GradScaler as
    training uses it: a step whose scaled gradients overflow is skipped
    and the scale lowered, up to 16 times."""
    for _ in range(16):
        model.zero_grad(set_to_none=True)
        with _amp(x.device, dtype):
            loss = model(x).float().pow(2).mean()
        (scaler.scale(loss) if scaler else loss).backward()
        flat = torch.cat([p.grad.float().flatten()
                          for _, a in adapter_modules(model)
                          for p in a.parameters() if p.grad is not None])
        if scaler is None:
            return flat
        if torch.isfinite(flat).all():
            return flat / scaler.get_scale()
        scaler.update(scaler.get_scale() / 2)  # as a skipped step does
    return flat


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


def amp_train_steps(device: torch.device, quick: bool) -> Result:
    """fp16 (with a GradScaler) and bf16 train steps of ResNet-50 and
    Swin-T with MSLoRA: adapter gradients finite and pointing where
    fp32's do (cosine similarity >= 0.99 fp16, >= 0.95 bf16)."""
    size, batch = (64, 1) if quick else (224, 4)
    report, ok = {}, True
    for name, build in (('resnet50', resnet50_mslora),
                        ('swin_t', swin_t_mslora)):
        torch.manual_seed(0)
        model = build().to(device).train()
        for _, a in adapter_modules(model):  # a trained, non-zero Up
            nn.init.normal_(a.up.weight, std=0.02)
        x = torch.randn(batch, 3, size, size, device=device)
        ref = _adapter_grads(model, x, None, None)
        for dtype, least in ((torch.float16, 0.99), (torch.bfloat16, 0.95)):
            scaler = torch.amp.GradScaler(device.type) \
                if dtype == torch.float16 else None
            grads = _adapter_grads(model, x, dtype, scaler)
            finite = bool(torch.isfinite(grads).all())
            cosine = _cosine(grads, ref) if finite else float('nan')
            report[f'{name}_{str(dtype)[6:]}'] = dict(
                cosine_vs_fp32=cosine, rel_error_vs_fp32=_rel(grads, ref),
                finite=finite)
            ok &= finite and cosine >= least
    return dict(ok=ok, **report)


def _layer_cases() -> List[Tuple[str, Callable[[], nn.Module], tuple]]:
    """(name, stock layer, input shape) of every frozen layer type."""
    return [
        ('conv1x1', lambda: nn.Conv2d(32, 48, 1), (2, 32, 12, 10)),
        ('conv3x3_s2', lambda: nn.Conv2d(32, 48, 3, 2, 1), (2, 32, 12, 10)),
        ('dwconv7x7', lambda: nn.Conv2d(32, 32, 7, 1, 3, groups=32),
         (2, 32, 12, 10)),
        ('linear', lambda: nn.Linear(32, 48), (2, 30, 32)),
        ('batchnorm', lambda: nn.BatchNorm2d(32).eval(), (2, 32, 12, 10)),
        ('relu', lambda: nn.ReLU(), (2, 32, 12, 10)),
    ]


FROZEN = {nn.Conv2d: FrozenConv2d, nn.Linear: FrozenLinear,
          nn.BatchNorm2d: FrozenBatchNorm2d, nn.ReLU: MaskReLU}


def frozen_layers_vs_stock(device: torch.device, quick: bool) -> Result:
    """Every activation-free frozen layer against the stock layer's
    autograd: output, input gradient, their dtypes and the gradient's
    memory format, for contiguous and channels-last inputs, fp32 and
    autocast (fp16 and bf16 on CUDA, bf16 on CPU)."""
    dtypes = [None, torch.bfloat16] + (
        [torch.float16] if device.type == 'cuda' else [])
    failures, checked = [], 0
    for name, make, shape in _layer_cases():
        torch.manual_seed(0)
        stock = make().to(device).requires_grad_(False)
        if isinstance(stock, nn.BatchNorm2d):
            stock.running_mean.normal_(0, 0.5)
            stock.running_var.uniform_(0.5, 2.0)
            stock.weight.data.uniform_(0.5, 1.5)
        frozen = FROZEN[type(stock)].convert(copy.deepcopy(stock))
        formats = [torch.contiguous_format] + (
            [torch.channels_last] if len(shape) == 4 else [])
        for fmt in formats:
            for dtype in dtypes:
                x = torch.randn(shape, device=device).contiguous(
                    memory_format=fmt)
                outs = []
                for layer in (stock, frozen):
                    xi = x.clone().requires_grad_()
                    with _amp(device, dtype):
                        y = layer(xi)
                    y.float().pow(2).sum().backward()
                    outs.append((y, xi.grad))
                (y0, g0), (y1, g1) = outs
                tol = 1e-5 if dtype is None else 2e-2
                where = f'{name} {fmt} {dtype}'
                checked += 1
                if y0.dtype != y1.dtype or g0.dtype != g1.dtype:
                    failures.append(f'{where}: dtypes {y1.dtype}/{g1.dtype} '
                                    f'vs stock {y0.dtype}/{g0.dtype}')
                elif _rel(y1, y0) > tol or _rel(g1, g0) > tol:
                    failures.append(f'{where}: values differ '
                                    f'({_rel(y1, y0):.2e}, {_rel(g1, g0):.2e})')
                elif g1.dim() == 4 and g0.is_contiguous(
                        memory_format=torch.channels_last) != \
                        g1.is_contiguous(memory_format=torch.channels_last):
                    failures.append(f'{where}: input gradient memory format '
                                    'differs from stock')
    return dict(ok=not failures, checked=checked, failures=failures)


def window_attention_backends(device: torch.device, quick: bool) -> Result:
    """The scaled-dot-product attention call of Swin's frozen window
    attention (an additive ``(1, windows * heads, N, N)`` mask) under each
    backend against the explicit ``softmax(q k^T s + mask) v``: forward
    and input gradients. The backends the project uses on CUDA
    (``CUDA_SDPA_BACKENDS``) must pass; the others are reported."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    g = torch.Generator().manual_seed(0)
    b, wh, n, d = 2, 12, 49, 32
    q, k, v = (torch.randn(b, wh, n, d, generator=g).to(device)
               for _ in range(3))
    mask = torch.randn(1, wh, n, n, generator=g).to(device)
    mask[..., ::3] = -100.0  # the shift mask's large negative entries
    scale = d ** -0.5

    def grads(fn):
        qi, ki, vi = (t.clone().requires_grad_() for t in (q, k, v))
        out = fn(qi, ki, vi)
        out.pow(2).sum().backward()
        return [out, qi.grad, ki.grad, vi.grad]

    ref = grads(lambda q, k, v: torch.softmax(
        q @ k.transpose(-2, -1) * scale + mask, -1) @ v)
    report = {}
    for backend in (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                got = grads(lambda q, k, v: F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, scale=scale))
            error = max(_rel(a, r) for a, r in zip(got, ref))
            report[backend.name] = dict(ok=error < 1e-4, rel_error=error)
        except RuntimeError as e:  # no kernel for this input or device
            report[backend.name] = dict(ok=False, error=str(e)[:200])
    used = CUDA_SDPA_BACKENDS if device.type == 'cuda' else \
        [SDPBackend.MATH]
    return dict(ok=any(report[b.name]['ok'] for b in used) and all(
        report[b.name]['ok'] or 'error' in report[b.name] for b in used),
                used=[b.name for b in used], backends=report)


def ddp_step(device: torch.device, quick: bool) -> Result:
    """One DDP step of a 1-process group (NCCL on CUDA, gloo on CPU) with
    ``find_unused_parameters=False``: every adapter gets a gradient. The
    group meets in an in-process store (no port to race other processes
    for) and gives up after 2 minutes instead of the default 30. The DDP
    wrapper is freed before the group is destroyed: its reducer holds the
    group, and dropping the group's last reference there (the GIL held)
    deadlocks against gloo's worker threads."""
    from datetime import timedelta

    import torch.distributed as dist
    import torchvision
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    dist.init_process_group(backend, store=dist.HashStore(), rank=0,
                            world_size=1, timeout=timedelta(minutes=2))
    try:
        model = torchvision.models.resnet18()
        inject_adapters(model, ['layer*.*'], dict(rank=16))
        model = freeze_pretrained(model).to(device)
        ddp = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=False)
        ddp(torch.randn(2, 3, 64, 64, device=device)).pow(2).mean().backward()
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and p.grad is None]
    finally:
        ddp = None
        dist.destroy_process_group()
    return dict(ok=not missing, backend=backend, without_gradient=missing)


def graph_breaks(device: torch.device, quick: bool) -> Result:
    """``torch._dynamo.explain`` of an MSLoRA train step's forward and loss
    (the runtime's defaults for ``device``: on CPU the native kernel
    included; AOT autograd makes the backward): one graph, no break."""
    import torch._dynamo
    import torchvision
    model = torchvision.models.resnet18() if quick else \
        torchvision.models.resnet50()
    inject_adapters(model, ['layer*.*'], dict(rank=32, with_cp=True))
    model = freeze_pretrained(model).to(device).train()
    x = torch.randn(1, 3, 64, 64, device=device)

    def step(x):
        return model(x).pow(2).mean()

    torch._dynamo.reset()
    with runtime(**dict.fromkeys(OPTIONS, DEFAULT)):
        explained = torch._dynamo.explain(step)(x)
    return dict(ok=explained.graph_break_count == 0,
                graphs=explained.graph_count,
                breaks=explained.graph_break_count,
                reasons=[str(b.reason)[:200] for b in explained.break_reasons])


class LoRA(nn.Module):
    """A LoRA of rank ``rank`` beside a frozen ``Conv2d``/``Linear``:
    ``layer(x) + B(A(x))``, ``B`` zero (the peer of the cost table)."""

    def __init__(self, layer: nn.Module, rank: int) -> None:
        super().__init__()
        self.layer = layer
        if isinstance(layer, nn.Conv2d):
            self.a = nn.Conv2d(layer.in_channels, rank, layer.kernel_size,
                               layer.stride, layer.padding, layer.dilation,
                               bias=False)
            self.b = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        else:
            self.a = nn.Linear(layer.in_features, rank, bias=False)
            self.b = nn.Linear(rank, layer.out_features, bias=False)
        nn.init.zeros_(self.b.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x) + self.b(self.a(x))


def add_lora(model: nn.Module, hosts: List[str], rank: int) -> nn.Module:
    """:class:`LoRA` on every ungrouped ``Conv2d``/``Linear`` inside the
    modules ``hosts``; only LoRA trains."""
    model.requires_grad_(False)
    for host in hosts:
        for name, child in list(model.get_submodule(host).named_modules()):
            if isinstance(child, (nn.Conv2d, nn.Linear)) and getattr(
                    child, 'groups', 1) == 1:
                parent, _, attr = f'{host}.{name}'.rpartition('.')
                setattr(model.get_submodule(parent), attr, LoRA(child, rank))
    return model


def _cost_models(quick: bool, backbone: str = 'resnet50', flips: bool = True
                 ) -> Dict[str, Tuple[Callable[[], nn.Module], Dict]]:
    """The cost table's modes, each a builder of the backbone and the
    runtime options it runs with: ``'resnet50'`` (ResNet-18 if ``quick``;
    MSLoRA on every Bottleneck's output, LoRA r=16 on every ungrouped conv
    of the stages) or ``'swin_t'`` (MSLoRA with ``LN_in`` on every block's
    output, LoRA r=16 on the MLPs' linears: torchvision's window attention
    reads its ``qkv``/``proj`` weights directly). ``flips``: also MSLoRA
    with each of CUDA's layout options flipped. ``mslora_triton`` where the
    Triton kernels run here (``ops.triton_unavailable``)."""
    import torchvision
    from ...core.ops import triton_unavailable

    def stock():  # quick: ResNet-18, the same modes at toy cost
        if backbone == 'swin_t':
            return torchvision.models.swin_t().features
        model = (torchvision.models.resnet18 if quick else
                 torchvision.models.resnet50)()
        model.avgpool, model.fc = nn.Identity(), nn.Identity()
        return calibrated(model)

    first, sites = ('1', [dict(pattern='[1357].*', layout='nhwc',
                               pre_norm=True)]) if backbone == 'swin_t' \
        else ('layer1', ['layer*.*'])

    def floor():  # frozen body, gradients from its first stage back
        model = freeze_pretrained(stock())
        model.get_submodule(first).register_forward_pre_hook(
            lambda m, args: (args[0].detach().requires_grad_(), ))
        return model

    def mslora(with_cp=True):
        def build():
            model = stock()
            inject_adapters(model, sites, dict(rank=128, groups=4,
                                               with_cp=with_cp),
                            probe_size=64)
            return freeze_pretrained(model)
        return build

    def lora():
        model = stock()
        if backbone == 'swin_t':
            hosts = [n for n, m in model.named_modules()
                     if n.endswith('.mlp')]
        else:
            hosts = [n for n, m in model.named_modules()
                     if n.count('.') == 1 and n.startswith('layer')]
        return add_lora(model, hosts, 16)

    modes = {'full': (stock, {}), 'floor': (floor, {}),
             'mslora': (mslora(), dict(kernel='stock'))}
    if triton_unavailable(torch.empty(0, device=_COST_DEVICE[0])) is None:
        modes['mslora_triton'] = (mslora(), dict(kernel='triton'))
    if flips:
        cuda = DEVICE_DEFAULTS['cuda']  # each flipped in one mode
        modes.update({
            'mslora_channels_last': (mslora(), dict(
                kernel='stock', channels_last=not cuda['channels_last'])),
            'mslora_no_cp': (mslora(with_cp=False), dict(kernel='stock')),
            'mslora_band_rows': (mslora(), dict(
                kernel='stock',
                band_rows=32 if cuda['band_rows'] is None else None))})
    modes['lora_r16'] = (lora, {})
    return modes


#: the device the cost table is measured on (set by each cost section)
_COST_DEVICE = [torch.device('cpu')]


def _timed_steps(model: nn.Module, x: Tensor, amp: Optional[torch.dtype],
                 iters: int, warmup: int,
                 forward_only: bool = False) -> Dict[str, float]:
    """Median forward/backward/optimizer times (CUDA events on CUDA) and
    the peak allocated memory of train steps (``forward_only``: of
    forwards)."""
    device = x.device
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(  # as the configs' constructor builds it
        params, lr=1e-4, fused=runtime_option('fused_optimizer', device)
        or None) if params else None
    scaler = torch.amp.GradScaler(device.type) \
        if amp == torch.float16 else None
    times: Dict[str, List[float]] = dict(forward_s=[], backward_s=[],
                                         optimizer_s=[])
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    def mark():
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed(a, b) -> float:
        if cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1000
        return b - a

    for i in range(warmup + iters):
        t0 = mark()
        with _amp(device, amp):
            loss = model(x).float().pow(2).mean()
        t1 = mark()
        if forward_only:
            if i >= warmup:
                times['forward_s'].append(elapsed(t0, t1))
            continue
        (scaler.scale(loss) if scaler else loss).backward()
        t2 = mark()
        if optim is not None and scaler:
            scaler.step(optim)
            scaler.update()
        elif optim is not None:
            optim.step()
        if optim is not None:
            optim.zero_grad(set_to_none=True)
        t3 = mark()
        if i >= warmup:
            for key, (a, b) in zip(times, ((t0, t1), (t1, t2), (t2, t3))):
                times[key].append(elapsed(a, b))
    result = {k: sorted(v)[len(v) // 2] for k, v in times.items() if v}
    result['train_step_s'] = sum(result.values())
    result['peak_memory_mb'] = torch.cuda.max_memory_allocated(device) / \
        2**20 if cuda else None
    return result


def _cost(device: torch.device, quick: bool, backbone: str = 'resnet50',
          compiled: bool = False) -> Result:
    """The backbone alone, batch 8 x 3 x 512^2 (quick: 1 x 64^2), fp32 and
    AMP (fp16 + GradScaler on CUDA, bf16 on CPU): each mode's step split
    and peak memory, and ratios to full fine-tuning; ``compiled``: each
    model under ``torch.compile`` (warm-up steps include compiling)."""
    batch, size, iters, warmup = (1, 64, 2, 1) if quick else (8, 512, 10, 3)
    warmup += 2 * compiled
    amp = torch.float16 if device.type == 'cuda' else torch.bfloat16
    _COST_DEVICE[0] = device
    modes = _cost_models(quick, backbone,
                         flips=backbone == 'resnet50' and not compiled)
    table = {}
    for precision, dtype in (('fp32', None), ('amp', amp)):
        rows = {}
        for mode, (build, settings) in modes.items():
            torch.manual_seed(0)
            model = build().to(device).train()
            if compiled:
                torch._dynamo.reset()
                model = torch.compile(model)
            x = torch.randn(batch, 3, size, size, device=device)
            with runtime(**settings):
                rows[mode] = _timed_steps(model, x, dtype, iters, warmup)
            del model, x
            if device.type == 'cuda':
                torch.cuda.empty_cache()
        full = rows['full']
        for row in rows.values():
            row['time_vs_full'] = row['train_step_s'] / full['train_step_s']
            row['memory_vs_full'] = None if full['peak_memory_mb'] is None \
                else row['peak_memory_mb'] / full['peak_memory_mb']
        table[precision] = rows
    problems = cost_table_problems(table, list(modes), device.type == 'cuda')
    return dict(ok=not problems, problems=problems, backbone=backbone,
                compiled=compiled, batch=batch, size=size,
                amp_dtype=str(amp), table=table)


def cost_table(device: torch.device, quick: bool) -> Result:
    """ResNet-50, eager: every mode, CUDA's layout options flipped too."""
    return _cost(device, quick)


def cost_table_compiled(device: torch.device, quick: bool) -> Result:
    """ResNet-50 under ``torch.compile`` (CUDA: compiling every mode twice
    takes a CPU many minutes)."""
    if device.type != 'cuda':
        return skipped('needs CUDA (compiling each mode takes minutes on a '
                       'CPU; graph_breaks checks the tracing)')
    return _cost(device, quick, compiled=True)


def cost_table_swin(device: torch.device, quick: bool) -> Result:
    """torchvision's Swin-T, eager."""
    return _cost(device, quick, 'swin_t')


def inference(device: torch.device, quick: bool) -> Result:
    """Forward only (no gradients), AMP, batch 8 x 3 x 512^2 (quick: 1 x
    64^2): the frozen body, MSLoRA (stock) and MSLoRA (triton) on
    ResNet-50 and Swin-T; medians of 10 forwards and ratios to the frozen
    body's."""
    batch, size, iters, warmup = (1, 64, 2, 1) if quick else (8, 512, 10, 3)
    amp = torch.float16 if device.type == 'cuda' else torch.bfloat16
    _COST_DEVICE[0] = device
    report = {}
    for backbone in ('resnet50', 'swin_t'):
        modes = _cost_models(quick, backbone, flips=False)
        rows = {}
        for mode in ('full', 'mslora', 'mslora_triton'):
            if mode not in modes:
                continue
            build, settings = modes[mode]
            torch.manual_seed(0)
            model = build().to(device).eval()
            x = torch.randn(batch, 3, size, size, device=device)
            with runtime(**settings), torch.no_grad():
                rows['frozen' if mode == 'full' else mode] = _timed_steps(
                    model, x, amp, iters, warmup, forward_only=True)
            del model, x
        for row in rows.values():
            row['time_vs_frozen'] = row['forward_s'] / \
                rows['frozen']['forward_s']
        report[backbone] = rows
    return dict(ok=True, batch=batch, size=size, amp_dtype=str(amp),
                table=report)


#: the figures of each mode's row of the cost table
COST_KEYS = ('forward_s', 'backward_s', 'optimizer_s', 'train_step_s',
             'peak_memory_mb', 'time_vs_full', 'memory_vs_full')


def cost_table_problems(table: Dict[str, Dict[str, dict]],
                        modes: List[str], cuda: bool) -> List[str]:
    """What is wrong with a cost table (empty: nothing): a precision or
    mode missing, a figure missing or not finite and positive (memory only
    on CUDA), a step that is not the sum of its parts, a ratio that is not
    the row's figure over full fine-tuning's."""
    problems = []
    for precision in ('fp32', 'amp'):
        rows = table.get(precision) or {}
        for mode in modes:
            row = rows.get(mode)
            if row is None:
                problems.append(f'{precision}/{mode}: missing')
                continue
            for key in COST_KEYS:
                value = row.get(key)
                if value is None and not cuda and 'memory' in key:
                    continue
                if not isinstance(value, (int, float)) or not (
                        math.isfinite(value) and value > 0):
                    problems.append(f'{precision}/{mode}: {key}={value!r}')
            if any(p.startswith(f'{precision}/{mode}:') for p in problems):
                continue
            parts = row['forward_s'] + row['backward_s'] + row['optimizer_s']
            if not math.isclose(row['train_step_s'], parts, rel_tol=1e-6):
                problems.append(f'{precision}/{mode}: train_step_s '
                                f'{row["train_step_s"]} != the sum of its '
                                f'parts {parts}')
            full = rows.get('full')
            for ratio, key in (('time_vs_full', 'train_step_s'),
                               ('memory_vs_full', 'peak_memory_mb')):
                if full is None or row.get(ratio) is None or not full.get(key):
                    continue
                if not math.isclose(row[ratio], row[key] / full[key],
                                    rel_tol=1e-6):
                    problems.append(f'{precision}/{mode}: {ratio} '
                                    f'{row[ratio]} != {key} / full\'s')
    return problems


SECTIONS = {
    'mslora_cuda_vs_cpu': mslora_cuda_vs_cpu,
    'amp_train_steps': amp_train_steps,
    'frozen_layers_vs_stock': frozen_layers_vs_stock,
    'window_attention_backends': window_attention_backends,
    'ddp_step': ddp_step,
    'graph_breaks': graph_breaks,
    'triton_vs_stock': triton_vs_stock,
    'triton_kernels': triton_kernels,
    'cost_table': cost_table,
    'cost_table_compiled': cost_table_compiled,
    'cost_table_swin': cost_table_swin,
    'inference': inference,
}
#: the sections that print a cost table
COST_SECTIONS = ('cost_table', 'cost_table_compiled', 'cost_table_swin')


def _driver() -> Optional[str]:
    """The NVIDIA driver's version (``nvidia-smi``), or None."""
    import subprocess
    try:
        return subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version',
             '--format=csv,noheader'], capture_output=True, text=True,
            timeout=30).stdout.split('\n')[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> Dict[str, object]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(device=torch.cuda.get_device_name(device)
                if device.type == 'cuda' else 'cpu',
                driver=_driver() if device.type == 'cuda' else None,
                torch=torch.__version__, triton=triton_version,
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                cpu_threads=torch.get_num_threads(),
                hostname=os.uname().nodename)


def run_all(device: torch.device, quick: bool,
            sections: Optional[List[str]] = None,
            report: Optional[Callable[[str], None]] = None
            ) -> Dict[str, object]:
    """Every section (or ``sections``) in order; a section that raises is
    a failure with its error, and the others still run. Each section's line
    goes to ``report`` (default: printed and flushed, so that a run killed
    in a section shows the ones before it)."""
    report = report or partial(print, flush=True)
    results: Dict[str, object] = dict(environment=environment(device))
    for name in sections or SECTIONS:
        start = time.perf_counter()
        try:
            result = SECTIONS[name](device, quick)
        except Exception as e:  # reported, not hidden: the section fails
            result = dict(ok=False, error=f'{type(e).__name__}: {e}')
        result['seconds'] = time.perf_counter() - start
        results[name] = result
        state = {True: 'PASS', False: 'FAIL', None: 'SKIP'}[result['ok']]
        why = result.get('skipped') or result.get('error') or '; '.join(
            result.get('problems') or [])
        report(f'{state} {name} ({result["seconds"]:.1f} s)' + (
            f': {why}' if why else ''))
    return results
