"""``--amp`` on every device: CUDA fp16 with loss scaling (mmengine's
``AmpOptimWrapper``), bf16 autocast on CPU (which mmengine refuses)."""
from contextlib import contextmanager
from typing import Any, List

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..core.mslora import unwrap_model

_AUTOCAST = '_mslora_cpu_autocast'


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float(v) for v in value)
    return value


def _enter(module: nn.Module, args: tuple) -> None:
    ctx = torch.autocast('cpu', dtype=torch.bfloat16)
    ctx.__enter__()
    setattr(module, _AUTOCAST, ctx)


def _exit(module: nn.Module, args: tuple, output: Any) -> Any:
    getattr(module, _AUTOCAST).__exit__(None, None, None)
    delattr(module, _AUTOCAST)
    return _to_float(output)


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose training forward runs the model's backbone and
    neck under CPU bf16 autocast. Their outputs return to fp32 for the heads,
    whose mmcv CPU ops (nms, RoIAlign) have no bf16 kernels. bf16 has fp32's
    exponent range, so no loss scaling is needed; parameters, gradients and
    optimizer state stay fp32. A model without ``backbone`` runs whole."""

    @contextmanager
    def optim_context(self, model: nn.Module):
        module = unwrap_model(model)
        parts: List[nn.Module] = [
            getattr(module, name) for name in ('backbone', 'neck')
            if isinstance(getattr(module, name, None), nn.Module)
        ] or [module]
        handles = [h for part in parts for h in (
            part.register_forward_pre_hook(_enter),
            part.register_forward_hook(_exit))]
        try:
            with super().optim_context(model):
                yield
        finally:
            for handle in handles:
                handle.remove()
            for part in parts:  # a forward that raised left autocast on
                if hasattr(part, _AUTOCAST):
                    _exit(part, (), None)


def enable_amp(cfg: Config) -> Config:
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine."""
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        print_log('--amp without CUDA: bfloat16 autocast for the backbone and '
                  'neck on the CPU (CPUAmpOptimWrapper; mmcv\'s CPU ops in the '
                  'heads have no bfloat16 kernels, so heads run in float32)',
                  logger='current')
    return cfg
