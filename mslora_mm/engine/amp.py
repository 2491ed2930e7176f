"""``--amp`` on every device: CUDA fp16 with loss scaling (mmengine's
``AmpOptimWrapper``), bf16 autocast on CPU (which mmengine refuses)."""
from contextlib import contextmanager

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under CPU bf16 autocast. bf16 has
    fp32's exponent range, so no loss scaling is needed; parameters,
    gradients and optimizer state stay fp32."""

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16):
            yield


def enable_amp(cfg: Config) -> Config:
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine."""
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        print_log('--amp without CUDA: training with bfloat16 autocast on '
                  'the CPU (CPUAmpOptimWrapper)', logger='current')
    return cfg
