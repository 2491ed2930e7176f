"""The GPU check's cost sections: the backbone alone (ResNet-50 or Swin-T)
trained in each mode (full fine-tuning, the frozen body's floor, MSLoRA
with its options, the LoRA peer), fp32 and AMP, eager and compiled, and
inference against the frozen body; and what makes a cost table complete."""
import math
import statistics
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...core import freeze_pretrained, inject_adapters
from ...core.runtime import DEVICE_DEFAULTS, runtime, runtime_option
from ..cost.measure import timed
from ..cost.memory import peak_memory_mb
from .common import Result, autocast, skipped
from .models import add_lora, calibrated


def cost_models(quick: bool, backbone: str = 'resnet50', flips: bool = True,
                device: torch.device = torch.device('cpu')
                ) -> Dict[str, Tuple[Callable[[], nn.Module], Dict]]:
    """The cost table's modes, each a builder of the backbone and the
    runtime options it runs with: ``'resnet50'`` (ResNet-18 if ``quick``;
    MSLoRA on every Bottleneck's output, LoRA r=16 on every ungrouped conv
    of the stages) or ``'swin_t'`` (MSLoRA with ``LN_in`` on every block's
    output, LoRA r=16 on the MLPs' linears: torchvision's window attention
    reads its ``qkv``/``proj`` weights directly). ``flips``: also MSLoRA
    with each of CUDA's layout options flipped. ``mslora_triton`` where the
    Triton kernels run on ``device`` (``ops.triton_unavailable``)."""
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
    if triton_unavailable(torch.empty(0, device=device)) is None:
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


def timed_steps(model: nn.Module, x: Tensor, amp: Optional[torch.dtype],
                iters: int, warmup: int,
                forward_only: bool = False) -> Dict[str, float]:
    """Median forward/backward/optimizer times (``cost.measure.timed``:
    CUDA events on CUDA) and the peak allocated memory (None on CPU) of
    ``warmup`` + ``iters`` train steps of ``model`` on ``x`` with loss
    ``mean(out ** 2)`` (``forward_only``: of forwards)."""
    device = x.device
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(  # as the configs' constructor builds it
        params, lr=1e-4, fused=runtime_option('fused_optimizer', device)
        or None) if params else None
    scaler = torch.amp.GradScaler(device.type) \
        if amp == torch.float16 else None
    cuda = device.type == 'cuda'
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    held = {}

    def forward() -> None:
        with autocast(device, amp):
            held['loss'] = model(x).float().pow(2).mean()

    def backward() -> None:
        loss = held.pop('loss')
        (scaler.scale(loss) if scaler else loss).backward()

    def step() -> None:
        if optim is None:
            return
        if scaler:
            scaler.step(optim)
            scaler.update()
        else:
            optim.step()
        optim.zero_grad(set_to_none=True)

    phases = [('forward_s', forward)] if forward_only else [
        ('forward_s', forward), ('backward_s', backward),
        ('optimizer_s', step)]
    times: Dict[str, List[float]] = {key: [] for key, _ in phases}
    for i in range(warmup + iters):
        for key, fn in phases:
            seconds = timed(fn, device)
            if i >= warmup:
                times[key].append(seconds)
    result = {key: statistics.median(v) for key, v in times.items()}
    result['train_step_s'] = sum(result.values())
    result['peak_memory_mb'] = peak_memory_mb(device) if cuda else None
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
    modes = cost_models(quick, backbone,
                        flips=backbone == 'resnet50' and not compiled,
                        device=device)
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
                rows[mode] = timed_steps(model, x, dtype, iters, warmup)
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
    report = {}
    for backbone in ('resnet50', 'swin_t'):
        modes = cost_models(quick, backbone, flips=False, device=device)
        rows = {}
        for mode in ('full', 'mslora', 'mslora_triton'):
            if mode not in modes:
                continue
            build, settings = modes[mode]
            torch.manual_seed(0)
            model = build().to(device).eval()
            x = torch.randn(batch, 3, size, size, device=device)
            with runtime(**settings), torch.no_grad():
                rows['frozen' if mode == 'full' else mode] = timed_steps(
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
