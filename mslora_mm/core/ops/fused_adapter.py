"""The whole MSLoRA adapter as one PyTorch operator on channels-last pixels.

``out = x + Up(Pv(F') * PW(A(Pa(F'))))``, ``F' = LN_in(x)`` or ``x``, with
``A`` the Triton kernels of ``triton_transform.py`` and the grouped 1x1
projections as matrix products on the ``(P, C)`` view of ``x`` (``Pa`` and
``Pv`` as one product with their block-diagonal weights: no layout copies).
``torch.ops.mslora.fused_adapter`` has a fake implementation and an
autograd formula (``torch.compile`` traces a train step in one graph,
``torch.export`` keeps the operator), and computes in the input's dtype with
fp32 weights, returning fp32 weight gradients. With ``save=False`` (the
adapter's ``with_cp``) autograd keeps only the input and the parameters:
the backward recomputes the forward.
"""
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

#: LayerNorm epsilon of ``LN_in`` and of ``T``'s LayerNorm (``MSLoRA``)
EPS = 1e-6


class Params(NamedTuple):
    """The adapter's parameters in the operator's order (``norm_in`` first
    when ``pre_norm``)."""
    pa_w: Tensor
    pa_b: Tensor
    pv_w: Tensor
    pv_b: Tensor
    dw_w: Tuple[Tensor, Tensor, Tensor]
    dw_b: Tuple[Tensor, Tensor, Tensor]
    ln_w: Tensor
    ln_b: Tensor
    pw_w: Tensor
    pw_b: Tensor
    up_w: Tensor
    up_b: Tensor
    in_w: Optional[Tensor]
    in_b: Optional[Tensor]


def unpack(params: List[Tensor], pre_norm: bool) -> Params:
    """``params`` (as :func:`adapter_parameters` lists them) by role."""
    in_w, in_b, *rest = params if pre_norm else [None, None, *params]
    pa_w, pa_b, pv_w, pv_b, w1, b1, w2, b2, w3, b3, ln_w, ln_b, pw_w, pw_b, \
        up_w, up_b = rest
    return Params(pa_w, pa_b, pv_w, pv_b, (w1, w2, w3), (b1, b2, b3), ln_w,
                  ln_b, pw_w, pw_b, up_w, up_b, in_w, in_b)


def dense(weight: Tensor, groups: int) -> Tensor:
    """A grouped 1x1 convolution's ``(O, I / G, 1, 1)`` weight as its
    block-diagonal ``(O, I)`` matrix."""
    o, i = weight.shape[:2]
    return torch.block_diag(*weight.reshape(groups, o // groups, i))


def grouped(grad: Tensor, groups: int) -> Tensor:
    """The ``(O, I / G, 1, 1)`` gradient of a grouped 1x1 weight from the
    ``(O, I)`` gradient of its block-diagonal matrix."""
    o, i = grad.shape
    blocks = grad.reshape(groups, o // groups, groups, i // groups)
    return torch.diagonal(blocks, dim1=0, dim2=2).permute(2, 0, 1).reshape(
        o, i // groups, 1, 1)


def _forward(x: Tensor, params: List[Tensor], groups: int, pre_norm: bool,
             dt: torch.dtype) -> Tuple[Tensor, List[Tensor]]:
    """``(out (B, H, W, C), [zv (P, 2D), a (P, D), t (P, D)] + ([mean,
    rstd] of LN_in))``; the maps are computed in ``dt``, ``out`` in the
    promoted dtype of ``x`` and ``dt``."""
    from .triton_transform import transform_forward
    b, h, w, c = x.shape
    p = unpack(params, pre_norm)
    x2 = x.reshape(-1, c)
    stats: List[Tensor] = []
    f = x2.to(dt)
    if pre_norm:
        f, mean, rstd = torch.native_layer_norm(f, (c, ), p.in_w.to(dt),
                                                p.in_b.to(dt), EPS)
        stats = [mean, rstd]
    d = p.pa_w.shape[0]
    w_av = torch.cat([dense(p.pa_w, groups), dense(p.pv_w, groups)])
    zv = torch.addmm(torch.cat([p.pa_b, p.pv_b]).to(dt), f, w_av.t().to(dt))
    a = transform_forward(zv[:, :d], (b, h, w), p.dw_w, p.dw_b, p.ln_w,
                          p.ln_b, EPS)
    t = torch.addmm(p.pw_b.to(dt), a, p.pw_w.reshape(d, d).t().to(dt))
    delta = torch.addmm(p.up_b.to(dt), zv[:, d:] * t,
                        dense(p.up_w, groups).t().to(dt))
    return (x2 + delta).reshape(b, h, w, c), [zv, a, t] + stats


@torch.library.custom_op('mslora::fused_adapter', mutates_args=())
def fused_adapter(x: Tensor, params: List[Tensor], groups: int,
                  pre_norm: bool, dtype: torch.dtype,
                  save: bool) -> List[Tensor]:
    """MSLoRA's ``x + H(x)`` on channels-last pixels.

    Args:
        x (Tensor): ``(B, H, W, C)`` contiguous.
        params (list[Tensor]): the adapter's parameters in
            :func:`adapter_parameters`'s order.
        groups (int): G of the grouped projections.
        pre_norm (bool): ``F' = LN_in(x)`` (the first two parameters).
        dtype (torch.dtype): float16/bfloat16/float32/float64, the dtype
            the maps are computed in (``out`` has ``x``'s and its promoted
            dtype).
        save (bool): also return the intermediate maps for the backward
            (otherwise it recomputes them from ``x``).

    Returns:
        list[Tensor]: ``[out (B, H, W, C)]`` and, with ``save``, the maps.
    """
    with torch.autocast(x.device.type, enabled=False):
        out, maps = _forward(x, params, groups, pre_norm, dtype)
    return [out] + (maps if save else [])


@fused_adapter.register_fake
def _(x: Tensor, params: List[Tensor], groups: int, pre_norm: bool,
      dtype: torch.dtype, save: bool) -> List[Tensor]:
    out = torch.empty_like(x, dtype=torch.promote_types(x.dtype, dtype),
                           memory_format=torch.contiguous_format)
    if not save:
        return [out]
    p = x.shape[0] * x.shape[1] * x.shape[2]
    d = unpack(params, pre_norm).pa_w.shape[0]
    maps = [x.new_empty((p, 2 * d), dtype=dtype),
            x.new_empty((p, d), dtype=dtype),
            x.new_empty((p, d), dtype=dtype)]
    if pre_norm:
        stats = torch.native_layer_norm(
            x.new_empty((p, x.shape[3]), dtype=dtype), (x.shape[3], ), None,
            None, EPS)[1:]
        maps += [torch.empty_like(s) for s in stats]
    return [out] + maps


@torch.library.custom_op('mslora::fused_adapter_backward', mutates_args=())
def fused_adapter_backward(grad: Tensor, x: Tensor, params: List[Tensor],
                           maps: List[Tensor], groups: int, pre_norm: bool,
                           dtype: torch.dtype) -> List[Tensor]:
    """The gradients of :func:`fused_adapter`'s output ``grad`` ``(B, H, W,
    C)`` to ``x`` (``x``'s dtype) and to every parameter (float32, float64
    for float64 ``dtype``), from its saved ``maps`` or, if none,
    recomputed."""
    with torch.autocast(x.device.type, enabled=False):
        return _gradients(grad, x, params, maps, groups, pre_norm, dtype)


def _gradients(grad: Tensor, x: Tensor, params: List[Tensor],
               maps: List[Tensor], groups: int, pre_norm: bool,
               dt: torch.dtype) -> List[Tensor]:
    """:func:`fused_adapter_backward`'s implementation."""
    from .triton_transform import transform_backward
    b, h, w, c = x.shape
    p = unpack(params, pre_norm)
    acc = torch.float64 if dt == torch.float64 else torch.float32
    if not maps:
        maps = _forward(x, params, groups, pre_norm, dt)[1]
    zv, a, t = maps[:3]
    d = p.pa_w.shape[0]
    x2, g = x.reshape(-1, c).to(dt), grad.reshape(-1, c).to(dt)
    f = x2
    if pre_norm:
        f = ((x2.to(acc) - maps[3]) * maps[4] * p.in_w + p.in_b).to(dt)
    v = zv[:, d:]
    w_up = dense(p.up_w, groups).to(dt)
    d_up_w = grouped((g.t() @ (v * t)).to(acc), groups)
    dh = g @ w_up
    dv, d_t = dh * t, dh * v
    d_pw_w = (d_t.t() @ a).to(acc).reshape(p.pw_w.shape)
    da = d_t @ p.pw_w.reshape(d, d).to(dt)
    dz, *d_transform = transform_backward(zv[:, :d], da, (b, h, w), p.dw_w,
                                          p.dw_b, p.ln_w, p.ln_b, EPS)
    dzv = torch.cat([dz, dv], dim=1)
    d_av = (dzv.t() @ f).to(acc)
    d_av_b = dzv.sum(0, dtype=acc)
    df = dzv @ torch.cat([dense(p.pa_w, groups),
                          dense(p.pv_w, groups)]).to(dt)
    d_in: List[Tensor] = []
    if pre_norm:
        dx, d_in_w, d_in_b = torch.ops.aten.native_layer_norm_backward(
            df, x2, (c, ), maps[3], maps[4], p.in_w.to(dt), p.in_b.to(dt),
            [True, True, True])
        d_in = [d_in_w.to(acc), d_in_b.to(acc)]
        df = dx
    dx = (grad.reshape(-1, c).to(x.dtype) + df.to(x.dtype)).reshape(
        b, h, w, c)
    dws, dbs, (d_ln_w, d_ln_b) = (d_transform[:3], d_transform[3:6],
                                  d_transform[6:])
    dparams = d_in + [
        grouped(d_av[:d], groups), d_av_b[:d], grouped(d_av[d:], groups),
        d_av_b[d:], dws[0], dbs[0], dws[1], dbs[1], dws[2], dbs[2], d_ln_w,
        d_ln_b, d_pw_w, d_t.sum(0, dtype=acc), d_up_w, g.sum(0, dtype=acc)]
    # an operator's outputs must not alias: several are views of one
    # buffer (parameter-sized, so the copies are cheap)
    return [dx] + [t.clone(memory_format=torch.contiguous_format)
                   for t in dparams]


@fused_adapter_backward.register_fake
def _(grad: Tensor, x: Tensor, params: List[Tensor], maps: List[Tensor],
      groups: int, pre_norm: bool, dtype: torch.dtype) -> List[Tensor]:
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return [torch.empty_like(x, memory_format=torch.contiguous_format)] + [
        torch.empty_like(t, dtype=acc, memory_format=torch.contiguous_format)
        for t in params]


def _save(ctx, inputs: tuple, output: List[Tensor]) -> None:
    x, params, groups, pre_norm, dtype, save = inputs
    ctx.save_for_backward(x, *params, *output[1:])
    ctx.meta = (len(params), groups, pre_norm, dtype)


def _backward(ctx, grads: List[Tensor]):
    count, groups, pre_norm, dtype = ctx.meta
    x, *rest = ctx.saved_tensors
    params, maps = rest[:count], rest[count:]
    dx, *dparams = fused_adapter_backward(grads[0], x, params, maps, groups,
                                          pre_norm, dtype)
    dparams = [g.to(t.dtype) for g, t in zip(dparams, params)]
    return dx, dparams, None, None, None, None


fused_adapter.register_autograd(_backward, setup_context=_save)


def adapter_parameters(adapter) -> List[Tensor]:
    """An ``MSLoRA``'s parameters in the operator's order."""
    convs = [adapter.pa, adapter.pv, *adapter.dw]
    params = [t for m in convs for t in (m.weight, m.bias)]
    params += [adapter.norm.weight, adapter.norm.bias, adapter.pw.weight,
               adapter.pw.bias, adapter.up.weight, adapter.up.bias]
    if adapter.norm_in is not None:
        params = [adapter.norm_in.weight, adapter.norm_in.bias] + params
    return params


def unfused_reason(adapter) -> Optional[str]:
    """Why an ``MSLoRA`` cannot run as :func:`fused_adapter` (options
    outside the default form), or None."""
    if adapter.branches != 'both':
        return f'branches={adapter.branches!r}'
    for name in ('global_context', 'use_shuffle'):
        if getattr(adapter, name):
            return f'{name}=True'
    if adapter.gate is not None:
        return 'gate=True'
    if len(adapter.kernel_sizes) != 3:
        return f'kernel_sizes={adapter.kernel_sizes} (three sizes are fused)'
    return None


def fused_forward(adapter, x: Tensor,
                  hw_shape: Optional[Tuple[int, int]]) -> Tensor:
    """``adapter(x, hw_shape)`` through :func:`fused_adapter`: a
    ``(B, C, H, W)`` map (returned channels-last) or ``(B, N, C)`` tokens.
    Under autocast the maps are computed in autocast's dtype, the residual
    added in ``x``'s (as autocast's ``x + H(x)``)."""
    if x.dim() == 4:
        pixels = x.permute(0, 2, 3, 1)
    else:
        pixels = x.reshape(x.shape[0], *hw_shape, x.shape[2])
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) \
        if torch.is_autocast_enabled(device) else x.dtype
    grads = torch.is_grad_enabled() and (x.requires_grad or any(
        p.requires_grad for p in adapter.parameters()))
    out = fused_adapter(pixels.contiguous(), adapter_parameters(adapter),
                        adapter.groups, adapter.norm_in is not None, dtype,
                        grads and not adapter.with_cp)[0]
    return out.permute(0, 3, 1, 2) if x.dim() == 4 else out.reshape(x.shape)


__all__ = ['fused_adapter', 'fused_adapter_backward', 'fused_forward',
           'adapter_parameters', 'unfused_reason']
