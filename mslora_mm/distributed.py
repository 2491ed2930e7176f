"""Distributed training on CPU-only machines (gloo)."""
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel

# the runner looks wrappers up in mmengine's root registry
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class MMCPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules: the runner passes
    ``device_ids=[local_rank]``, which DDP rejects for CPU modules."""

    def __init__(self, module: torch.nn.Module, device_ids=None,
                 **kwargs) -> None:
        super().__init__(module=module, device_ids=None, **kwargs)


def adapt_cfg_to_device(cfg: Config) -> Config:
    """Without CUDA, a distributed launch uses gloo and the CPU DDP wrapper.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally,
    so for the ``pytorch`` launcher (torchrun) the gloo process group is
    initialised here, before the runner; the runner then reuses it.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher != 'none' and not torch.cuda.is_available():
        if launcher == 'pytorch' and not dist.is_initialized():
            dist.init_process_group(backend='gloo')
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        wrapper = dict(cfg.get('model_wrapper_cfg') or {})
        wrapper.setdefault('type', 'MMCPUDistributedDataParallel')
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters',
                           cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper
    return cfg
