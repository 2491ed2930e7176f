"""Where an MSLoRA ResNet-50 train step spends its CUDA time (the record of
docs/benchmarks.md, "CUDA"); run from the repository root on a CUDA machine:

    OUT=. python docs/results/gpu-h200/profile.py

Step times of full / MSLoRA / MSLoRA without ``with_cp`` (fp32 and fp16, with
and without ``cudnn.benchmark``), ``torch.profiler``'s top CUDA kernels of 3
steps without ``with_cp``, and one layer1-sized depthwise convolution.
"""
import json
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.getcwd())
from mslora_mm.analysis.gpu import costs  # noqa: E402
from mslora_mm.core.runtime import runtime  # noqa: E402

DEVICE = torch.device('cuda')
MODELS = costs.cost_models(False, device=DEVICE)
AMPS = (('fp32', None), ('fp16', torch.float16))


def step_time(mode: str, amp, benchmark: bool) -> dict:
    torch.backends.cudnn.benchmark = benchmark
    build, settings = MODELS[mode]
    torch.manual_seed(0)
    model = build().to(DEVICE).train()
    x = torch.randn(8, 3, 512, 512, device=DEVICE)
    with runtime(**settings):
        result = costs.timed_steps(model, x, amp, 10, 3)
    del model, x
    torch.cuda.empty_cache()
    return result


def top_kernels(amp) -> str:
    torch.backends.cudnn.benchmark = False
    model = MODELS['mslora_no_cp'][0]().to(DEVICE).train()
    x = torch.randn(8, 3, 512, 512, device=DEVICE)
    optim = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad])

    def step():
        with torch.autocast('cuda', dtype=amp, enabled=amp is not None):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        optim.step()
        optim.zero_grad()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by='cuda_time_total', row_limit=22,
                                     max_name_column_width=90)


def depthwise_ms(k: int, dtype: torch.dtype, channels_last: bool) -> float:
    conv = torch.nn.Conv2d(128, 128, k, padding=k // 2, groups=128)
    conv = conv.to(DEVICE, dtype)
    z = torch.randn(8, 128, 128, 128, device=DEVICE, dtype=dtype)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        z = z.contiguous(memory_format=torch.channels_last)
    z.requires_grad_()
    for _ in range(3):
        conv(z).sum().backward()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        conv(z).sum().backward()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / 10 * 1e3


def main() -> None:
    out = {}
    for name, amp in AMPS:
        for benchmark in (False, True):
            for mode in ('full', 'mslora', 'mslora_no_cp'):
                key = f'{name} bench={benchmark} {mode}'
                out[key] = step_time(mode, amp, benchmark)
                print(key, out[key], flush=True)
    for name, amp in AMPS:
        print(f'== {name} mslora_no_cp: top CUDA kernels (3 steps)')
        print(top_kernels(amp))
    for dtype in (torch.float32, torch.float16):
        for channels_last in (False, True):
            for k in (3, 5, 7):
                key = f'dw k={k} {dtype} channels_last={channels_last}'
                out[key] = depthwise_ms(k, dtype, channels_last)
                print(key, f'{out[key]:.2f} ms fwd+bwd', flush=True)
    with open(os.path.join(os.environ.get('OUT', '.'), 'profile.json'),
              'w') as f:
        json.dump(out, f, indent=1)


if __name__ == '__main__':
    main()
