"""The LoRA peer: Hugging Face peft's LoRA on the ``Conv2d``/``Linear``
layers inside the modules that host an MSLoRA config's adapters (the same
sites; depthwise convolutions excluded), on the frozen pretrained body
(``type='LoRABackbone'``)."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS

from mmdet.registry import MODELS
from ..core.freezing import adapted_class
from ..core.frozen_layers import convert_frozen_layers
from ..core.mslora import adapter_modules
from ..extras import require
from .injection import plain_backbone_config

#: what a LoRA parameter's name contains (peft's naming)
LORA_KEY = 'lora_'


def build_without_weights(backbone_cfg: Dict) -> nn.Module:
    """The backbone of ``backbone_cfg`` built without its ``init_cfg``
    (nor a nested plain backbone's): no weights read."""
    cfg = {k: v for k, v in copy.deepcopy(dict(backbone_cfg)).items()
           if k != 'init_cfg'}
    if isinstance(cfg.get('backbone'), dict):
        cfg['backbone'] = {k: v for k, v in cfg['backbone'].items()
                           if k != 'init_cfg'}
    return MODELS.build(ConfigDict(cfg))


def adapter_hosts(model: nn.Module) -> List[str]:
    """Names of the modules of ``model`` that host adapters, in forward
    order; an error if there are none."""
    hosts = [n.rpartition('.')[0] for n, _ in adapter_modules(model)]
    if not hosts:
        raise ValueError(f'the backbone {type(model).__name__} has no '
                         'adapters; give an MSLoRA backbone config '
                         '(MSLoRABackbone or a preset such as MSLoRAResNet)')
    return hosts


def lora_targets(backbone: nn.Module, hosts: Sequence[str]) -> List[str]:
    """Every ``Conv2d``/``Linear`` inside the modules ``hosts``, but grouped
    (depthwise) convolutions, where peft needs the rank divisible by the
    groups, and adapters."""
    return sorted({
        f'{host}.{name}' if name else host
        for host in hosts
        for name, m in backbone.get_submodule(host).named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(
            m, 'groups', 1) == 1 and '.mslora' not in f'.{name}'})


def add_peft_lora(backbone: nn.Module, hosts: Sequence[str],
                  rank: int) -> nn.Module:
    """peft LoRA (``r = lora_alpha = rank``) on :func:`lora_targets` of the
    plain ``backbone``, in place; only LoRA parameters trainable."""
    peft = require('peft', 'the LoRA peer (LoRABackbone)')
    LoraConfig, inject_adapter_in_model = (peft.LoraConfig,
                                           peft.inject_adapter_in_model)
    targets = lora_targets(backbone, hosts)
    backbone.requires_grad_(False)
    backbone = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), backbone)
    for name, p in backbone.named_parameters():
        p.requires_grad_(LORA_KEY in name)
    return backbone


def build_lora_backbone(backbone: Dict, hosts: Sequence[str], rank: int,
                        body_dropout: bool = True) -> nn.Module:
    """``type='LoRABackbone'``: the plain ``backbone`` (its ``init_cfg``
    weights loaded first, since peft renames the layers it wraps) with peft
    LoRA of ``rank`` on the layers of ``hosts``; the frozen body has the
    activation-free frozen layers and ``train()`` policy of an MSLoRA
    backbone."""
    model = MODELS.build(ConfigDict(copy.deepcopy(dict(backbone))))
    model.init_weights()
    add_peft_lora(model, hosts, rank)
    convert_frozen_layers(model)
    model.__class__ = adapted_class(type(model))
    model.body_dropout = body_dropout
    return model.train(model.training)


ROOT_MODELS.register_module(name='LoRABackbone', module=build_lora_backbone)


def lora_parameters(backbone_cfg: Dict, hosts: Sequence[str],
                    rank: int) -> int:
    """Trainable parameters of peft LoRA of ``rank`` on ``hosts`` of the
    plain ``backbone_cfg`` (built without weights)."""
    model = add_peft_lora(build_without_weights(backbone_cfg), hosts, rank)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def matched_lora(mslora_cfg: Dict,
                 rank: Optional[int] = None) -> Tuple[Dict, int, int]:
    """The ``LoRABackbone`` config on the sites of the MSLoRA backbone
    config ``mslora_cfg``, with ``rank`` or else the rank whose trainable
    parameter count is nearest MSLoRA's (LoRA's count grows linearly with
    the rank); returns it, its count and MSLoRA's."""
    model = build_without_weights(mslora_cfg)
    target = sum(p.numel() for p in model.parameters() if p.requires_grad)
    hosts = adapter_hosts(model)
    plain = plain_backbone_config(mslora_cfg)
    per_rank = lora_parameters(plain, hosts, 1)
    rank = rank or max(1, round(target / per_rank))
    return lora_config(plain, hosts, rank), rank * per_rank, target


def lora_config(plain: Dict, hosts: Sequence[str], rank: int) -> Dict:
    """The ``LoRABackbone`` config of ``rank`` on ``hosts`` of ``plain``."""
    return dict(type='LoRABackbone', backbone=plain, hosts=list(hosts),
                rank=rank)
