"""Optimizer constructor that trains adapters, neck and heads only."""
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from ..analysis.cost.params import count_parameters, format_parameter_table
from ..core.mslora import adapter_parameter_names, unwrap_model
from ..core.runtime import runtime_option


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MSLoRAOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that hands the optimizer only
    parameters with ``requires_grad`` (``paramwise_cfg`` still applies) and
    logs a parameter table.

    Args:
        optim_wrapper_cfg (dict): as for the default constructor.
        paramwise_cfg (dict, optional): as for the default constructor.
        frozen_backbone (bool): refuse a model whose backbone has trainable
            parameters outside the adapters (Adam/AdamW are fused where the
            runtime's ``fused_optimizer`` says so: :func:`fused_choice`). Defaults to True. Configs set it
            in ``optim_wrapper`` (mmengine passes the constructor only a
            type name): ``optim_wrapper=dict(constructor='MSLoRAOptim``
            ``WrapperConstructor', frozen_backbone=False, ...)``.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None,
                 frozen_backbone: bool = True) -> None:
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.frozen_backbone = optim_wrapper_cfg.pop('frozen_backbone',
                                                     frozen_backbone)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def _check(self, model: nn.Module) -> None:
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f'{type(model).__name__} has no trainable parameters: '
                'nothing to optimise. Unfreeze the neck/heads or add adapters '
                '(e.g. backbone type MSLoRAResNet).')
        backbone = getattr(model, 'backbone', None)
        if not self.frozen_backbone or backbone is None:
            return
        adapters = set(adapter_parameter_names(backbone))
        leaking = [
            f'backbone.{n}' for n, p in backbone.named_parameters()
            if p.requires_grad and n not in adapters
        ]
        if leaking:
            shown = ', '.join(leaking[:5]) + (' ...' if len(leaking) > 5
                                              else '')
            raise ValueError(
                f'MSLoRAOptimWrapperConstructor(frozen_backbone=True): '
                f'{len(leaking)} backbone parameters outside the adapters '
                f'would be trained ({shown}). Use an MSLoRA backbone '
                f'(MSLoRAResNet, MSLoRASwin, ...) which freezes them, or set '
                f'optim_wrapper.frozen_backbone=False for full fine-tuning.')

    def _trainable_params(self, model: nn.Module) -> List:
        if not self.paramwise_cfg:
            return [p for p in model.parameters() if p.requires_grad]
        groups: List[dict] = []
        self.add_params(groups, model)
        return [g for g in groups if g['params'][0].requires_grad]

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = unwrap_model(model)
        self._check(model)
        MMLogger.get_current_instance().info(
            'MSLoRA parameter table:\n' +
            format_parameter_table(count_parameters(model)))
        # a plain dict: a ConfigDict would turn the groups into ConfigDicts,
        # which dynamo cannot step (mmengine's `compile` option)
        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cfg['params'] = self._trainable_params(model)
        optimizer_cfg.update(fused_choice(optimizer_cfg, model))
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(
            optim_wrapper_cfg, default_args=dict(optimizer=optimizer))


def fused_choice(optimizer_cfg: dict, model: nn.Module) -> dict:
    """``{'fused': True}`` for an Adam/AdamW config without ``fused`` when
    the runtime's ``fused_optimizer`` is on for the device of ``model``'s
    trainable parameters and PyTorch has a fused kernel there, else
    ``{}``."""
    from torch.utils._foreach_utils import \
        _get_fused_kernels_supported_devices as fused_devices
    kind = optimizer_cfg.get('type')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    params = [p for p in model.parameters() if p.requires_grad]
    if name.split('.')[-1] not in ('Adam', 'AdamW') or \
            'fused' in optimizer_cfg or not params:
        return {}
    device = params[0].device
    if not runtime_option('fused_optimizer', device) or \
            device.type not in fused_devices() or not all(
                p.device == device and p.is_floating_point() for p in params):
        return {}
    return dict(fused=True)


# classification (mmpretrain scope) finds it through the root registry
ROOT_CONSTRUCTORS.register_module(module=MSLoRAOptimWrapperConstructor)
