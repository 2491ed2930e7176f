"""The multi-scale transformation's nonlinear part as Triton kernels.

``A(z) = GELU(LN(sum_k GELU(DW_k(z))))`` (``T(z) = PW(A(z))``, the 1x1
``PW`` is a matrix product outside) of a channels-last map: ``z`` is read as
``(B, H, W, D)`` pixels with a row stride (a column slice of a wider
``(P, 2D)`` product is read in place).

- ``transform_forward``: one kernel. A program takes a tile of pixels with
  all D channels, reads the tile shifted by each tap of the largest kernel
  once (the three depthwise convolutions share the loads), accumulates in fp32 (fp64 for
  fp64 input), applies the GELUs, the sum, LayerNorm over D and the GELU,
  and writes ``A`` in ``z``'s dtype.
- ``transform_backward``: two kernels that recompute from ``z`` alone.
  The first recomputes the tile's pre-activations and LayerNorm statistics
  and writes the three pre-activation gradients ``dU_k`` (fp32) and the
  tile's partial sums of the LayerNorm and bias gradients; the second reads
  ``dU_k`` and ``z`` once per tap and gives the input gradient and the
  tile's partial depthwise weight gradients in the same pass. Partial sums
  are written per program and summed once afterwards (no atomics: the
  result does not depend on the order programs run in).

Kernels are written for Triton 3.6 and 3.7 alike; under
``TRITON_INTERPRET=1`` (read when this module is imported) they run on CPU
tensors, which is how the tests check them.
"""
from typing import List, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

#: pixels x channels of one program's tile (values held per accumulator)
TILE_ELEMENTS = 2048
#: channels of one program in the per-channel backward kernel
CHANNEL_BLOCK = 32
#: warps of a program: with the tiles above, no kernel spills registers on
#: sm_90 (ptxas, tests/test_triton_kernels.py) and the forward's 80
#: registers a thread leave room for three programs an SM
NUM_WARPS = 8


@triton.jit
def _gelu(x):
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def _gelu_grad(x):
    cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
    return cdf + x * tl.exp(-0.5 * x * x) * 0.3989422804014327


@triton.jit
def _tile(pid, H, W, tiles_w, TH: tl.constexpr, TW: tl.constexpr):
    """Batch index, pixel rows/columns ``(TH * TW, )`` and their mask of
    tile ``pid`` (tiles in row-major order within each image)."""
    tiles_h = (H + TH - 1) // TH
    tw = pid % tiles_w
    th = (pid // tiles_w) % tiles_h
    b = pid // (tiles_w * tiles_h)
    pix = tl.arange(0, TH * TW)
    py = th * TH + pix // TW
    px = tw * TW + pix % TW
    return b, py, px, (py < H) & (px < W)


@triton.jit
def _tap_weight(w_ptr, c, cmask, dy, dx, R: tl.constexpr, ACC: tl.constexpr):
    """Tap ``(dy, dx)`` of depthwise ``(D, 1, 2R+1, 2R+1)`` weights for
    channels ``c``: zero outside the kernel's radius; and whether inside."""
    inside = (dy >= -R) & (dy <= R) & (dx >= -R) & (dx <= R)
    tap = (dy + R) * (2 * R + 1) + (dx + R)
    wv = tl.load(w_ptr + c * (2 * R + 1) * (2 * R + 1) + tap,
                 mask=cmask & inside, other=0.).to(ACC)
    return wv, inside, tap


@triton.jit
def _shifted(z_ptr, base, stride_p, py, px, pmask, c, cmask, H, W, dy, dx,
             ACC: tl.constexpr):
    """``z`` at the tile's pixels shifted by ``(dy, dx)``, zero outside the
    image (the convolutions' padding), in ``ACC``."""
    yy = py + dy
    xx = px + dx
    m = pmask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return tl.load(z_ptr + base + (yy * W + xx).to(tl.int64)[:, None] *
                   stride_p + c[None, :], mask=m[:, None] & cmask[None, :],
                   other=0.).to(ACC)


@triton.jit
def _branch_sums(z_ptr, w1, w2, w3, b1, b2, b3, base, stride_p, py, px, pmask,
                 c, cmask, H, W, R1: tl.constexpr, R2: tl.constexpr,
                 R3: tl.constexpr, RM: tl.constexpr, ACC: tl.constexpr):
    """The three depthwise pre-activations ``U_k`` of a tile
    ``(pixels, channels)``, biases included, in ``ACC``. One load of the
    shifted tile per tap of the largest kernel, shared by the branches (a
    loop, not unrolled: the loads are not hoisted into registers)."""
    u1 = tl.zeros((py.shape[0], c.shape[0]), ACC)
    u2 = tl.zeros((py.shape[0], c.shape[0]), ACC)
    u3 = tl.zeros((py.shape[0], c.shape[0]), ACC)
    for t in range((2 * RM + 1) * (2 * RM + 1)):
        dy = t // (2 * RM + 1) - RM
        dx = t % (2 * RM + 1) - RM
        v = _shifted(z_ptr, base, stride_p, py, px, pmask, c, cmask, H, W, dy,
                     dx, ACC)
        wv = _tap_weight(w1, c, cmask, dy, dx, R1, ACC)[0]
        u1 += v * wv[None, :]
        wv = _tap_weight(w2, c, cmask, dy, dx, R2, ACC)[0]
        u2 += v * wv[None, :]
        wv = _tap_weight(w3, c, cmask, dy, dx, R3, ACC)[0]
        u3 += v * wv[None, :]
    u1 += tl.load(b1 + c, mask=cmask, other=0.).to(ACC)[None, :]
    u2 += tl.load(b2 + c, mask=cmask, other=0.).to(ACC)[None, :]
    u3 += tl.load(b3 + c, mask=cmask, other=0.).to(ACC)[None, :]
    return u1, u2, u3


@triton.jit
def _normalized(u1, u2, u3, cmask, D, eps):
    """``(LN's normalised input, 1 / std)`` of ``sum_k GELU(U_k)`` over the
    channels (padding channels give 0)."""
    s = _gelu(u1) + _gelu(u2) + _gelu(u3)
    s = tl.where(cmask[None, :], s, 0.)
    mean = tl.sum(s, axis=1) / D
    centred = tl.where(cmask[None, :], s - mean[:, None], 0.)
    var = tl.sum(centred * centred, axis=1) / D
    rstd = 1. / tl.sqrt(var + eps)
    return centred * rstd[:, None], rstd


@triton.jit
def _tile_maps(pid, z_ptr, w1, w2, w3, b1, b2, b3, ln_w, ln_b, H, W, D,
               stride_p, tiles_w, eps, R1: tl.constexpr, R2: tl.constexpr,
               R3: tl.constexpr, RM: tl.constexpr, TH: tl.constexpr,
               TW: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    """What the forward and the first backward kernel compute of tile
    ``pid`` with all D channels: the offsets of its ``(pixels, channels)``
    elements in a dense ``(P, D)`` map and their mask, the pre-activations
    ``U_k``, LayerNorm's normalised input and ``1 / std``, and its weight
    and bias."""
    b, py, px, pmask = _tile(pid, H, W, tiles_w, TH, TW)
    c = tl.arange(0, BLOCK_D)
    cmask = c < D
    u1, u2, u3 = _branch_sums(z_ptr, w1, w2, w3, b1, b2, b3,
                              b.to(tl.int64) * H * W * stride_p, stride_p, py,
                              px, pmask, c, cmask, H, W, R1, R2, R3, RM, ACC)
    n_hat, rstd = _normalized(u1, u2, u3, cmask, D, eps)
    gamma = tl.load(ln_w + c, mask=cmask, other=0.).to(ACC)
    beta = tl.load(ln_b + c, mask=cmask, other=0.).to(ACC)
    dense = (b.to(tl.int64) * H * W + (py * W + px).to(tl.int64)
             )[:, None] * D + c[None, :]
    return (dense, pmask[:, None] & cmask[None, :], u1, u2, u3, n_hat, rstd,
            gamma, beta)


@triton.jit
def _transform_fwd_kernel(z_ptr, out_ptr, w1, w2, w3, b1, b2, b3, ln_w, ln_b,
                          H, W, D, stride_p, tiles_w, eps,
                          R1: tl.constexpr, R2: tl.constexpr,
                          R3: tl.constexpr, RM: tl.constexpr,
                          TH: tl.constexpr, TW: tl.constexpr,
                          BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    dense, mask, u1, u2, u3, n_hat, _, gamma, beta = _tile_maps(
        tl.program_id(0), z_ptr, w1, w2, w3, b1, b2, b3, ln_w, ln_b, H, W, D,
        stride_p, tiles_w, eps, R1, R2, R3, RM, TH, TW, BLOCK_D, ACC)
    a = _gelu(n_hat * gamma[None, :] + beta[None, :])
    tl.store(out_ptr + dense, a.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _transform_bwd_ln_kernel(z_ptr, da_ptr, du_ptr, part_ptr, w1, w2, w3, b1,
                             b2, b3, ln_w, ln_b, H, W, D, stride_p, tiles_w,
                             eps, plane, R1: tl.constexpr, R2: tl.constexpr,
                             R3: tl.constexpr, RM: tl.constexpr,
                             TH: tl.constexpr, TW: tl.constexpr,
                             BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    """``dU_k`` (three planes of ``plane`` elements) and the tile's partial
    sums ``[dgamma, dbeta, db_1, db_2, db_3]`` (``(5, D)`` per program)."""
    pid = tl.program_id(0)
    dense, mask, u1, u2, u3, n_hat, rstd, gamma, beta = _tile_maps(
        pid, z_ptr, w1, w2, w3, b1, b2, b3, ln_w, ln_b, H, W, D, stride_p,
        tiles_w, eps, R1, R2, R3, RM, TH, TW, BLOCK_D, ACC)
    c = tl.arange(0, BLOCK_D)
    cmask = c < D
    da = tl.load(da_ptr + dense, mask=mask, other=0.).to(ACC)
    dn = tl.where(mask, da * _gelu_grad(n_hat * gamma[None, :] +
                                        beta[None, :]), 0.)
    g = dn * gamma[None, :]
    mean_g = tl.sum(g, axis=1) / D
    mean_gn = tl.sum(g * n_hat, axis=1) / D
    ds = rstd[:, None] * (g - mean_g[:, None] - n_hat * mean_gn[:, None])
    du1 = tl.where(mask, ds * _gelu_grad(u1), 0.)
    du2 = tl.where(mask, ds * _gelu_grad(u2), 0.)
    du3 = tl.where(mask, ds * _gelu_grad(u3), 0.)
    tl.store(du_ptr + dense, du1, mask=mask)
    tl.store(du_ptr + plane + dense, du2, mask=mask)
    tl.store(du_ptr + 2 * plane + dense, du3, mask=mask)
    part = part_ptr + pid.to(tl.int64) * 5 * D + c
    tl.store(part, tl.sum(dn * n_hat, axis=0), mask=cmask)
    tl.store(part + D, tl.sum(dn, axis=0), mask=cmask)
    tl.store(part + 2 * D, tl.sum(du1, axis=0), mask=cmask)
    tl.store(part + 3 * D, tl.sum(du2, axis=0), mask=cmask)
    tl.store(part + 4 * D, tl.sum(du3, axis=0), mask=cmask)


@triton.jit
def _tap_grads(du_ptr, w_ptr, part_ptr, du_c, zs, dz, dense_base, py, px,
               pmask, c, cmask, H, W, D, dy, dx, R: tl.constexpr,
               ACC: tl.constexpr):
    """Tap ``o = (dy, dx)`` of a branch of radius ``R`` (nothing outside
    it): writes the tile's partial weight gradient ``sum_p dU(p) z(p + o)``
    (``zs`` is ``z(p + o)``) and returns ``dz`` plus ``w(o) dU(p - o)``."""
    wv, inside, tap = _tap_weight(w_ptr, c, cmask, dy, dx, R, ACC)
    tl.store(part_ptr + tap * D + c, tl.sum(du_c * zs, axis=0),
             mask=cmask & inside)
    yy = py - dy
    xx = px - dx
    m = pmask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W) & inside
    dus = tl.load(du_ptr + dense_base + (yy * W + xx).to(tl.int64)[:, None]
                  * D + c[None, :], mask=m[:, None] & cmask[None, :],
                  other=0.)
    return dz + dus * wv[None, :]


@triton.jit
def _transform_bwd_dw_kernel(z_ptr, du_ptr, dz_ptr, part_ptr, w1, w2, w3, H,
                             W, D, stride_p, tiles_w, plane, taps,
                             R1: tl.constexpr, R2: tl.constexpr,
                             R3: tl.constexpr, RM: tl.constexpr,
                             TH: tl.constexpr, TW: tl.constexpr,
                             BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """``dz`` of a tile of pixels and ``BLOCK_C`` channels, and the tile's
    partial depthwise weight gradients (``taps`` rows of D per program:
    branch 1's taps, then 2's, then 3's)."""
    pid = tl.program_id(0)
    b, py, px, pmask = _tile(pid, H, W, tiles_w, TH, TW)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < D
    mask = pmask[:, None] & cmask[None, :]
    base = b.to(tl.int64) * H * W * stride_p
    dense_base = b.to(tl.int64) * H * W * D
    dense = dense_base + (py * W + px).to(tl.int64)[:, None] * D + c[None, :]
    du1 = tl.load(du_ptr + dense, mask=mask, other=0.)
    du2 = tl.load(du_ptr + plane + dense, mask=mask, other=0.)
    du3 = tl.load(du_ptr + 2 * plane + dense, mask=mask, other=0.)
    dz = tl.zeros((TH * TW, BLOCK_C), ACC)
    part = part_ptr + pid.to(tl.int64) * taps * D
    part2 = part + (2 * R1 + 1) * (2 * R1 + 1) * D
    part3 = part2 + (2 * R2 + 1) * (2 * R2 + 1) * D
    for t in range((2 * RM + 1) * (2 * RM + 1)):
        dy = t // (2 * RM + 1) - RM
        dx = t % (2 * RM + 1) - RM
        zs = _shifted(z_ptr, base, stride_p, py, px, pmask, c, cmask, H, W,
                      dy, dx, ACC)
        dz = _tap_grads(du_ptr, w1, part, du1, zs, dz, dense_base, py, px,
                        pmask, c, cmask, H, W, D, dy, dx, R1, ACC)
        dz = _tap_grads(du_ptr + plane, w2, part2, du2, zs, dz, dense_base,
                        py, px, pmask, c, cmask, H, W, D, dy, dx, R2, ACC)
        dz = _tap_grads(du_ptr + 2 * plane, w3, part3, du3, zs, dz,
                        dense_base, py, px, pmask, c, cmask, H, W, D, dy, dx,
                        R3, ACC)
    tl.store(dz_ptr + dense, dz.to(dz_ptr.dtype.element_ty), mask=mask)


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _tiling(h: int, w: int, channels: int) -> Tuple[int, int]:
    """``(TH, TW)``: a power-of-two tile of about ``TILE_ELEMENTS /
    channels`` pixels, no larger than the image needs."""
    pixels = max(TILE_ELEMENTS // channels, 1)
    tw = min(_pow2(w), 16, pixels)
    return min(_pow2(h), max(pixels // tw, 1)), tw


def _radii(weights: Sequence[Tensor]) -> Tuple[int, int, int, int]:
    r = tuple(wt.shape[-1] // 2 for wt in weights)
    return r + (max(r), )


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def transform_forward(z: Tensor, shape: Tuple[int, int, int],
                      weights: Sequence[Tensor], biases: Sequence[Tensor],
                      ln_weight: Tensor, ln_bias: Tensor,
                      eps: float) -> Tensor:
    """``A(z)`` of ``z`` laid out as ``(P, D)`` pixels with row stride
    ``z.stride(0)`` (``P = B * H * W``, ``shape = (B, H, W)``).

    Args:
        weights, biases: the three depthwise ``(D, 1, k, k)`` weights and
            ``(D, )`` biases; ``ln_weight``, ``ln_bias``: ``(D, )``.

    Returns:
        Tensor: ``(P, D)`` contiguous, ``z``'s dtype.
    """
    (b, h, w), d = shape, z.shape[1]
    out = torch.empty((z.shape[0], d), dtype=z.dtype, device=z.device)
    block_d = _pow2(d)
    th, tw = _tiling(h, w, block_d)
    tiles_w = triton.cdiv(w, tw)
    grid = (b * triton.cdiv(h, th) * tiles_w, )
    _transform_fwd_kernel[grid](
        z, out, *weights, *biases, ln_weight, ln_bias, h, w, d, z.stride(0),
        tiles_w, eps, *_radii(weights), TH=th, TW=tw, BLOCK_D=block_d,
        ACC=_acc(z.dtype), num_warps=NUM_WARPS)
    return out


def transform_backward(z: Tensor, grad: Tensor, shape: Tuple[int, int, int],
                       weights: Sequence[Tensor], biases: Sequence[Tensor],
                       ln_weight: Tensor, ln_bias: Tensor,
                       eps: float) -> List[Tensor]:
    """The gradients of :func:`transform_forward` for the output gradient
    ``grad`` ``(P, D)``, recomputed from ``z``.

    Returns:
        list[Tensor]: ``dz`` ``(P, D)`` in ``z``'s dtype, the three
        depthwise weight gradients, the three bias gradients, then those of
        ``ln_weight`` and ``ln_bias``, in float32 (float64 for float64 z).
    """
    (b, h, w), (p, d) = shape, grad.shape
    acc_dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    grad = grad.contiguous()
    radii = _radii(weights)
    block_d = _pow2(d)
    # half the forward's pixels: its maps and their gradients fit in the
    # registers (tests/test_triton_kernels.py)
    th, tw = _tiling(h, w, 2 * block_d)
    tiles_w = triton.cdiv(w, tw)
    programs = b * triton.cdiv(h, th) * tiles_w
    du = torch.empty((3, p, d), dtype=acc_dtype, device=z.device)
    part = torch.empty((programs, 5, d), dtype=acc_dtype, device=z.device)
    _transform_bwd_ln_kernel[(programs, )](
        z, grad, du, part, *weights, *biases, ln_weight, ln_bias, h, w, d,
        z.stride(0), tiles_w, eps, p * d, *radii, TH=th, TW=tw,
        BLOCK_D=block_d, ACC=_acc(z.dtype), num_warps=NUM_WARPS)
    d_gamma, d_beta, *d_biases = part.sum(0).unbind(0)

    block_c = min(block_d, CHANNEL_BLOCK)
    th, tw = _tiling(h, w, block_c)
    tiles_w = triton.cdiv(w, tw)
    programs = b * triton.cdiv(h, th) * tiles_w
    sizes = [wt.shape[-1] ** 2 for wt in weights]
    dz = torch.empty((p, d), dtype=z.dtype, device=z.device)
    part = torch.empty((programs, sum(sizes), d), dtype=acc_dtype,
                       device=z.device)
    _transform_bwd_dw_kernel[(programs, triton.cdiv(d, block_c))](
        z, du, dz, part, *weights, h, w, d, z.stride(0), tiles_w, p * d,
        sum(sizes), *radii, TH=th, TW=tw, BLOCK_C=block_c,
        ACC=_acc(z.dtype), num_warps=NUM_WARPS)
    d_weights = [g.t().reshape(wt.shape) for g, wt in zip(
        part.sum(0).split(sizes), weights)]
    return [dz, *d_weights, *d_biases, d_gamma, d_beta]
