"""The GPU check's numerical sections: MSLoRA on the device against the
CPU, fp16 and bf16 train steps against fp32, the frozen layers against
stock autograd, and Swin's masked window attention under each SDPA
backend."""
import copy
from typing import Callable, List, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...core import MSLoRA, adapter_modules
from ...core.frozen_layers import (CUDA_SDPA_BACKENDS, FrozenBatchNorm2d,
                                   FrozenConv2d, FrozenLinear, MaskReLU)
from ...core.runtime import STOCK, runtime
from .common import Result, autocast, randomize, rel_error, skipped
from .models import resnet50_mslora, swin_t_mslora

#: (MSLoRA arguments, runtime options) compared between CUDA and CPU
OPTION_SETS = {
    'stock': ({}, STOCK),
    'channels_last': ({}, dict(STOCK, channels_last=True)),
    'with_cp': (dict(with_cp=True), STOCK),
    'bands': (dict(with_cp=True), dict(STOCK, band_rows=8)),  # recompute's
    'all': (dict(with_cp=True), dict(STOCK, channels_last=True,
                                     band_rows=8)),
}


def mslora_step(x: Tensor, device: Union[str, torch.device], options: dict,
                settings: dict) -> List[Tensor]:
    """A seeded ``MSLoRA(64, rank=32, **options)`` on ``device`` under the
    runtime ``settings``: ``[output, grad of x, grads of its parameters]``
    of ``out.pow(2).mean()``. ``x`` (``(B, 64, H, W)``) is left as it is."""
    m = MSLoRA(64, rank=32, **options)
    randomize(m)
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
                errors.append(rel_error(cuda.cpu(), cpu))
            worst[name] = max(errors)
    finally:
        torch.backends.cuda.matmul.allow_tf32, \
            torch.backends.cudnn.allow_tf32 = tf32
    return dict(ok=max(worst.values()) < 1e-4, max_rel_error=worst)


def _adapter_grads(model: nn.Module, x: Tensor, dtype, scaler) -> Tensor:
    """The adapters' gradient of one step, flattened; with a GradScaler as
    training uses it: a step whose scaled gradients overflow is skipped
    and the scale lowered, up to 16 times."""
    for _ in range(16):
        model.zero_grad(set_to_none=True)
        with autocast(x.device, dtype):
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
                cosine_vs_fp32=cosine, rel_error_vs_fp32=rel_error(grads, ref),
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
                    with autocast(device, dtype):
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
                elif max(rel_error(y1, y0), rel_error(g1, g0)) > tol:
                    failures.append(f'{where}: values differ ('
                                    f'{rel_error(y1, y0):.2e}, '
                                    f'{rel_error(g1, g0):.2e})')
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
            error = max(rel_error(a, r) for a, r in zip(got, ref))
            report[backend.name] = dict(ok=error < 1e-4, rel_error=error)
        except RuntimeError as e:  # no kernel for this input or device
            report[backend.name] = dict(ok=False, error=str(e)[:200])
    used = CUDA_SDPA_BACKENDS if device.type == 'cuda' else \
        [SDPBackend.MATH]
    return dict(ok=any(report[b.name]['ok'] for b in used) and all(
        report[b.name]['ok'] or 'error' in report[b.name] for b in used),
                used=[b.name for b in used], backends=report)
