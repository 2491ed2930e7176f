"""The GPU check's sections on an MSLoRA train step under PyTorch's
wrappers: one DDP step, and its graph under ``torch.compile``."""
import torch
import torch.nn as nn

from ...core import freeze_pretrained, inject_adapters
from ...core.runtime import DEFAULT, OPTIONS, runtime
from .common import Result


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
