"""DDP with ``find_unused_parameters=False`` on backbones whose last stages
feed no output (``out_indices``): their adapters are frozen at build time,
so every trainable parameter gets a gradient in every iteration."""
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import free_port, logged_messages

SWIN = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
            window_size=4, drop_path_rate=0.0)
CASES = {
    'resnet18-out012': dict(type='MSLoRAResNet', depth=18,
                            out_indices=(0, 1, 2), adapter_cfg=dict(rank=8)),
    'resnet50-frozen1-out12': dict(type='MSLoRAResNet', depth=50,
                                   frozen_stages=1, out_indices=(1, 2),
                                   adapter_cfg=dict(rank=8)),
    'swin-out012': dict(SWIN, type='MSLoRASwin', out_indices=(0, 1, 2),
                        adapter_cfg=dict(rank=8)),
    'generic-resnet18-out01': dict(
        type='MSLoRABackbone', sites=['layer*.*'], adapter_cfg=dict(rank=8),
        backbone=dict(type='ResNet', depth=18, out_indices=(0, 1))),
}
#: the same in mmseg's scope (mmseg's classes under the presets)
SEG_CASES = {
    'mmseg-resnet50v1c-frozen1-out12': dict(
        type='MSLoRAResNetV1c', depth=50, frozen_stages=1, out_indices=(1, 2),
        adapter_cfg=dict(rank=8)),
    'mmseg-swin-out012': dict(SWIN, type='MSLoRASwin', out_indices=(0, 1, 2),
                              adapter_cfg=dict(rank=8)),
}


def _train(rank: int, world: int, port: int, cfg: dict,
           scope: str = 'mmdet') -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    torch.set_num_threads(1)
    from mmdet.utils import register_all_modules
    from mmengine.registry import MODELS, init_default_scope
    import mslora_mm  # noqa: F401
    register_all_modules()
    init_default_scope(scope)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        MODELS.build(cfg), find_unused_parameters=False)
    optim = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(rank)
    for _ in range(3):
        loss = sum(o.pow(2).mean() for o in model(torch.randn(2, 3, 64, 64)))
        loss.backward()
        optim.step()
        optim.zero_grad()
    dist.barrier()
    # DDP's reducer holds the group: freed first, so that destroying the group
    # joins gloo's worker threads with the GIL released (the other order, the
    # reducer freed last with the GIL held, hung CI: torch 2.13).
    model = optim = None
    dist.destroy_process_group()


@pytest.mark.parametrize('name', list(CASES) + list(SEG_CASES))
def test_ddp_three_iterations_without_unused_parameters(name):
    cfg, scope = (CASES[name], 'mmdet') if name in CASES else (
        SEG_CASES[name], 'mmseg')
    context = mp.start_processes(_train,
                                 args=(2, free_port(), cfg, scope),
                                 nprocs=2, join=False, start_method='spawn')
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f'{name}: DDP ranks still running after 300 s')


@pytest.mark.parametrize('name', list(CASES))
def test_unreachable_adapters_are_frozen_and_logged(name):
    from mmdet.registry import MODELS
    from mslora_mm import adapter_modules
    with logged_messages() as messages:
        model = MODELS.build(CASES[name])
    out_indices = CASES[name].get('out_indices') or \
        CASES[name]['backbone']['out_indices']
    last = max(out_indices)
    for site, adapter in adapter_modules(model):
        stage = next(int(part[-1]) - 1 if part.startswith('layer') else
                     int(part) for part in site.split('.')
                     if part.startswith('layer') or part.isdigit())
        trainable = any(p.requires_grad for p in adapter.parameters())
        frozen_stages = CASES[name].get('frozen_stages', -1)
        assert trainable == (frozen_stages - 1 < stage <= last), site
    logged = [m for m in messages if 'cannot reach an output' in m]
    assert len(logged) == 1, messages
    stage = 'stages.3.' if 'swin' in name else f'layer{last + 2}.'
    assert stage in logged[0]
