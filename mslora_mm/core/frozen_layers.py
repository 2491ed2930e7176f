"""Frozen layers that keep no activations for backward.

Gradients still flow through a frozen backbone (to the adapters below), but
only the input gradient is needed there. PyTorch's autograd nevertheless
saves every frozen conv's and linear's input (for the weight gradient it
will not compute), every BatchNorm's input and every ReLU's float output.
The drop-in replacements below compute the same forward and input gradient
and save only the weights, the per-channel scales or a 1-byte mask (Swin's
window attention: its queries, keys, values and output, not the attention
matrix). They keep their parameters, buffers and state-dict keys, and fall
back to the stock layer whenever a parameter is trainable or no gradient is
needed.

Under autocast (``--amp``) the backward computes in the gradient's dtype
(the weight is cast to it), and the frozen BatchNorm computes in its
input's dtype (its C scales and shifts cast to it), returning that dtype as
the stock layer does. Input gradients keep the input's memory format
(channels-last stays channels-last).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function
from torch.nn.attention import SDPBackend

#: the attention backends for an additive float mask (Swin's window
#: attention, ``FrozenWindowMSA``) on CUDA: memory-efficient (masks and
#: their backward supported) and math; not flash (no masks) nor cuDNN
#: attention (upstream reports errors in its masked backward on Hopper)
CUDA_SDPA_BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def needs_input_grad_only(x: Tensor, layer: nn.Module) -> bool:
    return (torch.is_grad_enabled() and x.requires_grad
            and not any(p.requires_grad for p in layer.parameters()))


def _share_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """Give ``new`` the very parameter and buffer tensors of ``old``."""
    new._parameters.update(old._parameters)
    new._buffers.update(old._buffers)
    return new.train(old.training)


class Restorable:
    """A frozen layer that remembers the class it replaced (``stock_type``:
    the stock layer or an exactly equivalent subclass, such as mmcv's)."""
    stock_type: type

    def _remember(self, stock: nn.Module) -> 'Restorable':
        self.stock_type = type(stock)
        return self


class _ConvInputGrad(Function):
    """conv2d whose backward computes the input gradient from the weight
    alone: saves the weight, not the ``(B, C, H, W)`` input."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                conv: nn.Conv2d) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.input_shape = x.shape
        ctx.channels_last = x.dim() == 4 and not x.is_contiguous() and \
            x.is_contiguous(memory_format=torch.channels_last)
        ctx.args = (conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.conv2d(x, weight, bias, *ctx.args)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        weight, = ctx.saved_tensors
        weight = weight.to(grad.dtype)
        if ctx.channels_last:  # the backends follow the weight's format
            weight = weight.contiguous(memory_format=torch.channels_last)
        grad_input = torch.nn.grad.conv2d_input(
            ctx.input_shape, weight, grad, *ctx.args)
        if ctx.channels_last:  # where a backend does not
            grad_input = grad_input.contiguous(
                memory_format=torch.channels_last)
        return grad_input, None, None, None


class FrozenConv2d(Restorable, nn.Conv2d):
    """``nn.Conv2d`` with frozen weights that saves no input for backward."""

    @classmethod
    def convert(cls, conv: nn.Conv2d) -> 'FrozenConv2d':
        frozen = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                     conv.stride, conv.padding, conv.dilation, conv.groups,
                     conv.bias is not None, conv.padding_mode,
                     device='meta')
        return _share_state(frozen, conv)._remember(conv)

    def forward(self, x: Tensor) -> Tensor:
        if (not needs_input_grad_only(x, self)
                or self.padding_mode != 'zeros'
                or isinstance(self.padding, str)):
            return super().forward(x)
        return _ConvInputGrad.apply(x, self.weight, self.bias, self)


class _LinearInputGrad(Function):
    """linear whose backward saves only the weight (``grad @ W``)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor,
                bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        weight, = ctx.saved_tensors
        return grad.matmul(weight.to(grad.dtype)), None, None


class FrozenLinear(Restorable, nn.Linear):
    """``nn.Linear`` with frozen weights that saves no input for backward."""

    @classmethod
    def convert(cls, linear: nn.Linear) -> 'FrozenLinear':
        frozen = cls(linear.in_features, linear.out_features,
                     linear.bias is not None, device='meta')
        return _share_state(frozen, linear)._remember(linear)

    def forward(self, x: Tensor) -> Tensor:
        if not needs_input_grad_only(x, self):
            return super().forward(x)
        return _LinearInputGrad.apply(x, self.weight, self.bias)


class FrozenBatchNorm2d(nn.Module):
    """A BatchNorm2d with running statistics, as one affine map per channel.

    In eval mode ``y = x * s + t`` with ``s = w / sqrt(var + eps)`` and
    ``t = b - mean * s``: what ``nn.BatchNorm2d`` computes, but autograd saves
    only ``s`` (C scales) instead of the ``(B, C, H, W)`` input, and the
    backward is one multiply. In train mode (only if a user trains it) it is
    ``nn.BatchNorm2d``. Parameters, buffers and state-dict keys are the
    BatchNorm's; it is deliberately *not* a ``_BatchNorm``, so that SyncBN
    conversion (mmengine's ``sync_bn``) and ``norm_eval`` leave it frozen.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.num_features = bn.num_features
        self.eps = bn.eps
        self.momentum = bn.momentum
        self.affine = bn.affine
        self.track_running_stats = bn.track_running_stats
        self.stock_type = type(bn)
        _share_state(self, bn)

    def to_stock(self) -> nn.modules.batchnorm._BatchNorm:
        """The BatchNorm it was made from, sharing its tensors."""
        return _share_state(self.stock_type(
            self.num_features, self.eps, self.momentum, self.affine,
            self.track_running_stats), self)

    @classmethod
    def convert(cls, bn: nn.modules.batchnorm._BatchNorm
                ) -> 'FrozenBatchNorm2d':
        return cls(bn)

    # the stock computation, for train mode and non-4D inputs
    _check_input_dim = nn.BatchNorm2d._check_input_dim
    _batch_norm = nn.BatchNorm2d.forward

    def forward(self, x: Tensor) -> Tensor:
        if self.training or self.running_var is None or x.dim() != 4:
            return self._batch_norm(x)
        scale = torch.sqrt(self.running_var + self.eps).reciprocal()
        if self.weight is not None:
            scale = scale * self.weight
        shift = -(self.running_mean * scale)
        if self.bias is not None:
            shift = self.bias + shift
        # C scales and shifts from the float32 statistics, then one fused
        # multiply-add in the input's dtype (under autocast: no full-size
        # float32 temporary or cast, and a backward in the gradient's dtype)
        return torch.addcmul(shift.to(x.dtype).view(1, -1, 1, 1), x,
                             scale.to(x.dtype).view(1, -1, 1, 1))

    def _load_from_state_dict(self, state_dict, prefix, *args,
                              **kwargs) -> None:
        # checkpoints from before BatchNorm had this counter lack it
        key = prefix + 'num_batches_tracked'
        if self.num_batches_tracked is not None and key not in state_dict:
            state_dict[key] = self.num_batches_tracked
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


class _ReLUWithMask(Function):
    """ReLU that keeps the 1-byte mask ``y > 0`` instead of the float ``y``.

    Its backward is ReLU's own kernel (``threshold_backward``: the gradient
    where the mask is 1, exactly 0 elsewhere, non-finite gradients
    included) on the mask as int8: 4-5x faster on CPU than ``torch.where``
    on a bool mask."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.relu(x)
        ctx.save_for_backward((y > 0).view(torch.int8))
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        mask, = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, mask, 0)


class MaskReLU(Restorable, nn.ReLU):
    """``nn.ReLU`` that saves a 1-byte mask (1/4 of the memory) for backward;
    in-place as configured when no gradient is needed."""

    @classmethod
    def convert(cls, relu: nn.ReLU) -> 'MaskReLU':
        return cls(relu.inplace).train(relu.training)._remember(relu)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _ReLUWithMask.apply(x)
        return super().forward(x)


#: stock layer class -> its activation-free frozen version (libraries add
#: theirs with :func:`add_frozen_layer`)
FROZEN_LAYERS = {
    nn.Conv2d: FrozenConv2d,
    nn.Linear: FrozenLinear,
    nn.BatchNorm2d: FrozenBatchNorm2d,
    nn.SyncBatchNorm: FrozenBatchNorm2d,  # in eval mode, a BatchNorm2d
    nn.ReLU: MaskReLU,
}


def add_frozen_layer(stock: type, frozen: type) -> None:
    """Convert frozen layers of exactly the class ``stock`` to ``frozen``
    (a class with ``convert(layer)``; restorable if a ``Restorable``)."""
    FROZEN_LAYERS[stock] = frozen


def convert_frozen_layers(model: nn.Module) -> None:
    """Replace, in place, every frozen layer of ``model`` whose class is in
    :data:`FROZEN_LAYERS` (``Conv2d``, ``Linear``, ``BatchNorm2d`` /
    ``SyncBatchNorm``, ``ReLU``, and what libraries added) by its
    activation-free version. Layers with a trainable parameter (the
    adapters) and other subclasses of these types are left as they are."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            frozen = FROZEN_LAYERS.get(type(child))
            if frozen is not None and not any(
                    p.requires_grad for p in child.parameters()):
                setattr(parent, name, frozen.convert(child))


def restore_stock_layers(model: nn.Module) -> None:
    """Undo :func:`convert_frozen_layers` in place: every activation-free
    layer becomes the class it replaced, with the same tensors."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is FrozenBatchNorm2d:
                setattr(parent, name, child.to_stock())
            elif isinstance(child, Restorable):
                child.__class__ = child.stock_type
                del child.stock_type
