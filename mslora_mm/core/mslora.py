"""The MSLoRA adapter: multi-scale low-rank adaptation by attention reweighting.

``F_hat = F + Up(Pv(F') * T(Pa(F')))`` with
``T(z) = PW(GELU(LN(sum_k GELU(DW_k(z)))))`` (see ``docs/method.md``).
"""
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .ops import fused_branch_sum, fused_forward, use_fused, use_kernel
from .runtime import runtime_option

BRANCHES = ('both', 'linear', 'nonlinear')
#: the adapter's attribute name in its host module (and state-dict keys)
ADAPTER_NAME = 'mslora'


#: the wrappers whose ``module`` is the model (mmengine's subclass them)
WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel/DDP/FSDP wrapper (mmengine's wrappers
    included), or ``model``."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    if isinstance(model, WRAPPERS + (FullyShardedDataParallel, )):
        return model.module
    return model


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key (of a model, backbone or adapter file)
    belongs to an adapter."""
    return f'.{ADAPTER_NAME}.' in f'.{key}'


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map, at every pixel."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle of a ``(B, C, H, W)`` map across groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(
        b, c, h, w)


def _check(condition: bool, message: str, where: str,
           kind: str = 'MSLoRA') -> None:
    if not condition:
        raise ValueError(f'{kind}({where}): {message}')


class SiteAdapter(nn.Module):
    """What every adapter at a site is: a module ``x -> x + H(x)`` on
    ``(B, C, H, W)`` maps, or ``(B, N, C)`` tokens with ``hw_shape=(H, W)``,
    registered in its host as the child ``ADAPTER_NAME`` (MSLoRA, and the
    peers it is compared with, such as ``Mona``). ``init_weights`` gives
    its initial state (mmengine calls it once, ``is_init`` after that)."""
    in_channels: int
    is_init: bool = False
    #: False: the adapter is the identity and computes nothing
    #: (``disable_adapters``)
    enabled: bool = True

    def init_weights(self) -> None:
        raise NotImplementedError

    def residual(self, x: Tensor,
                 hw_shape: Optional[Tuple[int, int]]) -> Tensor:
        """``H(x)``: the change made to ``x`` (a map, or tokens with
        ``hw_shape``), as a ``(B, C, H, W)`` map."""
        raise NotImplementedError

    def forward(self, x: Tensor,
                hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        if not self.enabled:
            return x
        h = self.residual(x, hw_shape)
        return x + (h.flatten(2).transpose(1, 2) if x.dim() == 3 else h)


class MSLoRA(SiteAdapter):
    """Multi-scale low-rank adapter, applied as ``x + H(x)``.

    Args:
        in_channels (int): C, channels of the adapted feature.
        rank (int): D, width of the low-rank space. Defaults to 128.
        groups (int): G, groups of the three 1x1 projections. Defaults to 4.
        max_rank_ratio (float, optional): a per-site rank rule: D is at most
            ``max_rank_ratio * C``, rounded down to a multiple of G (at least
            G), so that small early features are not widened (e.g. 1.0:
            ``D = min(rank, C)``). None: D = ``rank`` at every site (the
            paper's fixed D). Defaults to None.
        kernel_sizes (Sequence[int]): odd depthwise kernel sizes of the
            multi-scale transformation. Defaults to (3, 5, 7).
        branches (str): 'both' (``Pv * T(Pa)``), 'linear' (``Pv``) or
            'nonlinear' (``T(Pa)``). Defaults to 'both'.
        channel_shuffle (bool): shuffle the D channels across the G groups
            before ``Up``. Defaults to False.
        global_context (bool): add a pooled global context to the
            multi-scale sum. Defaults to False.
        gate (bool): multiply ``T(z)`` by ``sigmoid(conv1x1(z))``.
            Defaults to False.
        pre_norm (bool): LayerNorm the input over C first (Swin/ViT); the
            residual still adds the raw input. Defaults to False.
        with_cp (bool): recompute ``H`` in backward instead of storing its
            intermediate maps (less memory, one extra adapter forward), as
            mmdet's ``with_cp``. Defaults to False.
        site (str, optional): where the adapter sits, used in error messages.

    Shapes:
        ``(B, C, H, W)`` maps, or ``(B, N, C)`` tokens with ``hw_shape=(H, W)``;
        the output has the input's shape.

    How the arithmetic is laid out (memory format, row bands, which
    kernel) is not an argument: it is a runtime setting (``runtime.py``).
    """
    _abbr_ = ADAPTER_NAME  # the plugin's name in mmdet's ResNet blocks

    def __init__(self,
                 in_channels: int,
                 rank: int = 128,
                 groups: int = 4,
                 max_rank_ratio: Optional[float] = None,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 branches: str = 'both',
                 channel_shuffle: bool = False,
                 global_context: bool = False,
                 gate: bool = False,
                 pre_norm: bool = False,
                 with_cp: bool = False,
                 site: Optional[str] = None) -> None:
        super().__init__()
        where = f'in_channels={in_channels}' + (f' at {site}' if site else '')
        kernel_sizes = tuple(kernel_sizes)
        _check(isinstance(rank, int) and rank >= 1,
               f'rank={rank!r} must be an int >= 1', where)
        _check(isinstance(groups, int) and groups >= 1,
               f'groups={groups!r} must be an int >= 1', where)
        _check(in_channels % groups == 0,
               f'groups={groups} must divide in_channels={in_channels}; '
               'choose groups from its divisors (e.g. 1, 2, 4)', where)
        _check(rank % groups == 0,
               f'groups={groups} must divide rank={rank}; '
               'choose a rank that is a multiple of groups', where)
        _check(max_rank_ratio is None or (
            isinstance(max_rank_ratio, (int, float)) and
            not isinstance(max_rank_ratio, bool) and max_rank_ratio > 0),
               f'max_rank_ratio={max_rank_ratio!r} must be a number > 0 '
               '(e.g. 1.0: rank at most in_channels) or None', where)
        if max_rank_ratio is not None:
            cap = int(max_rank_ratio * in_channels) // groups * groups
            rank = min(rank, max(cap, groups))
        _check(branches in BRANCHES,
               f'branches={branches!r} is unknown; use one of {BRANCHES}',
               where)
        _check(len(kernel_sizes) > 0 and all(
            isinstance(k, int) and k >= 1 and k % 2 == 1
            for k in kernel_sizes),
               f'kernel_sizes={kernel_sizes} must be odd ints >= 1 '
               '(e.g. (3, 5, 7))', where)
        _check(isinstance(with_cp, bool),
               f'with_cp={with_cp!r} must be True or False', where)
        self.in_channels = in_channels
        self.rank = rank
        self.groups = groups
        self.kernel_sizes = kernel_sizes
        self.branches = branches
        self.use_shuffle = channel_shuffle
        self.pre_norm = pre_norm
        self.with_cp = with_cp
        self.where = where
        self.global_context = global_context

        self.norm_in = nn.LayerNorm(in_channels, eps=1e-6) if pre_norm \
            else None
        self.pv = nn.Conv2d(in_channels, rank, 1, groups=groups) \
            if branches != 'nonlinear' else None
        self.pa = nn.Conv2d(in_channels, rank, 1, groups=groups) \
            if branches != 'linear' else None
        if branches != 'linear':  # the multi-scale transformation T
            self.dw = nn.ModuleList(
                nn.Conv2d(rank, rank, k, padding=k // 2, groups=rank)
                for k in kernel_sizes)
            self.context = nn.Conv2d(rank, rank, 1) if global_context \
                else None
            self.norm = LayerNorm2d(rank, eps=1e-6)
            self.pw = nn.Conv2d(rank, rank, 1)
            self.gate = nn.Conv2d(rank, rank, 1) if gate else None
        self.up = nn.Conv2d(rank, in_channels, 1, groups=groups)
        self.reset_up()

    def reset_up(self) -> None:
        """Zero ``Up`` so that the adapter starts as the identity."""
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def init_weights(self) -> None:
        """Default conv init for every layer, zero ``Up`` (identity start)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.LayerNorm)):
                m.reset_parameters()
        self.reset_up()
        self.is_init = True

    def projection_parameters(self) -> Tuple[nn.Parameter, ...]:
        """Parameters of the three grouped 1x1 projections Pv, Pa, Up."""
        convs = [m for m in (self.pv, self.pa, self.up) if m is not None]
        return tuple(p for m in convs for p in m.parameters())

    def transform(self, z: Tensor) -> Tensor:
        """The multi-scale transformation ``T``: ``(B, D, H, W)`` ->
        ``(B, D, H, W)``."""
        return self._transform(z, (0, z.shape[2]))

    def delta(self, x: Tensor,
              hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        """The reweighting ``H(F') = Up(Pv(F') * T(Pa(F')))`` of the
        adapter's input ``x`` (a map, or tokens with ``hw_shape``) as a
        ``(B, C, H, W)`` map."""
        return self._delta(x, hw_shape, (0, self._height(x, hw_shape)))

    def forward(self, x: Tensor,
                hw_shape: Optional[Tuple[int, int]] = None) -> Tensor:
        if self.enabled and x.dim() == 3:
            self._height(x, hw_shape)  # tokens need hw_shape
        if self.enabled and use_fused(self, x):
            return fused_forward(self, x, hw_shape)
        return super().forward(x, hw_shape)

    def residual(self, x: Tensor,
                 hw_shape: Optional[Tuple[int, int]]) -> Tensor:
        """``delta``, laid out as the runtime says (``runtime.py``) when
        gradients are on: channels-last and, with ``with_cp``, recomputed
        from the input in backward (``LN_in`` included) in bands of rows,
        each from its rows and their halo alone. (Without the recompute
        autograd keeps every band's maps: bands would add halos and a
        concatenated copy, not save memory.)"""
        if not (torch.is_grad_enabled() and (
                x.requires_grad or self.up.weight.requires_grad)):
            return self.delta(x, hw_shape)
        if x.dim() == 4 and runtime_option('channels_last', x.device):
            # once, outside the recompute (which then keeps this copy: the
            # per-band copy inside it measured 1.16x -> 1.32x full's time)
            x = x.contiguous(memory_format=torch.channels_last)
        height = self._height(x, hw_shape)
        step = runtime_option('band_rows', x.device) if self.with_cp and \
            not self.global_context else None
        step = step or height
        bands = [(r, min(r + step, height)) for r in range(0, height, step)]
        if self.with_cp:
            parts = [checkpoint(self._band, x, hw_shape, band,
                                use_reentrant=False) for band in bands]
        else:
            parts = [self._band(x, hw_shape, band) for band in bands]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    def _band(self, x: Tensor, hw_shape: Optional[Tuple[int, int]],
              rows: Tuple[int, int]) -> Tensor:
        """``H(F')`` of some rows of the input, from those rows and the
        depthwise convolutions' halo above and below them.

        Args:
            x (Tensor): the adapter's input, ``(B, C, H, W)`` or ``(B, N, C)``
                tokens.
            hw_shape (tuple[int, int], optional): ``(H, W)`` of tokens.
            rows (tuple[int, int]): ``(r0, r1)``, the output rows.

        Returns:
            Tensor: ``(B, C, r1 - r0, W)``.
        """
        (r0, r1), height = rows, self._height(x, hw_shape)
        halo = max(self.kernel_sizes) // 2 if self.pa is not None else 0
        a0, a1 = max(r0 - halo, 0), min(r1 + halo, height)
        if x.dim() == 4:
            x = x[:, :, a0:a1]
        else:
            width = hw_shape[1]
            x, hw_shape = x[:, a0 * width:a1 * width], (a1 - a0, width)
        return self._delta(x, hw_shape, (r0 - a0, r1 - a0))

    def _delta(self, x: Tensor, hw_shape: Optional[Tuple[int, int]],
               rows: Tuple[int, int]) -> Tensor:
        """``H(F')`` of some rows of the input.

        Args:
            x (Tensor): the adapter's input (or a band of it), ``(B, C, H,
                W)`` or ``(B, N, C)`` tokens; its rows outside ``rows`` are
                read by the depthwise convolutions only.
            hw_shape (tuple[int, int], optional): ``(H, W)`` of tokens.
            rows (tuple[int, int]): ``(r0, r1)``, the output rows.

        Returns:
            Tensor: ``(B, C, r1 - r0, W)``.
        """
        r0, r1 = rows
        fa = self._maps(x, hw_shape)[1]
        fv = fa[:, :, r0:r1]
        if self.branches != 'linear':
            t = self._transform(self.pa(fa), rows)
        if self.branches == 'linear':
            h = self.pv(fv)
        elif self.branches == 'nonlinear':
            h = t
        else:
            h = self.pv(fv) * t
        if self.use_shuffle:
            h = channel_shuffle(h, self.groups)
        return self.up(h)

    def _transform(self, z: Tensor, rows: Tuple[int, int]) -> Tensor:
        """``T`` of some rows of a map.

        Args:
            z (Tensor): ``(B, D, H', W)``; its rows outside ``rows`` are
                read by the depthwise convolutions only.
            rows (tuple[int, int]): ``(r0, r1)``, the rows of ``z`` to
                transform.

        Returns:
            Tensor: ``(B, D, r1 - r0, W)``.
        """
        r0, r1 = rows
        context = self.context(F.adaptive_avg_pool2d(z, 1)) \
            if self.context is not None else None
        if use_kernel(z, self.where):  # computes rows r0:r1 only
            s = fused_branch_sum(z, self.dw, (r0, r1))
            z, r0, r1 = z[:, :, r0:r1], 0, r1 - r0
        else:
            s = sum(F.gelu(dw(z)) for dw in self.dw)
        if context is not None:
            s = s + context
        t = self.pw(F.gelu(self.norm(s)))
        if self.gate is not None:
            t = t * torch.sigmoid(self.gate(z))
        return t[:, :, r0:r1]

    @staticmethod
    def _height(x: Tensor, hw_shape: Optional[Tuple[int, int]]) -> int:
        """H of a map, or of tokens laid out on ``hw_shape``."""
        if x.dim() == 4:
            return x.shape[2]
        if hw_shape is None:
            raise ValueError('MSLoRA: token input (B, N, C) needs '
                             'hw_shape=(H, W)')
        return hw_shape[0]

    def _maps(self, x: Tensor, hw_shape: Optional[Tuple[int, int]]
              ) -> Tuple[Tensor, Tensor]:
        """``(F, F')`` as ``(B, C, H, W)`` maps, ``F' = LN_in(F)`` if
        ``pre_norm`` (tokens are normalised before they are laid out on
        their ``(H, W)`` grid)."""
        if x.dim() == 4:
            if self.norm_in is None:
                return x, x
            return x, self.norm_in(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        (b, _, c), (height, width) = x.shape, hw_shape
        f = self.norm_in(x) if self.norm_in is not None else x
        return (x.transpose(1, 2).reshape(b, c, height, width),
                f.transpose(1, 2).reshape(b, c, height, width))

    @torch.no_grad()
    def explain(self, x: Tensor,
                hw_shape: Optional[Tuple[int, int]] = None
                ) -> Dict[str, Tensor]:
        """What the adapter does to ``x`` (its forward's arguments), as maps:
        ``feature`` F ``(B, C, H, W)``, ``delta`` H(F') ``(B, C, H, W)`` and,
        unless ``branches='linear'``, ``attention`` T(Pa(F')) ``(B, D, H, W)``.
        """
        self._height(x, hw_shape)  # tokens need hw_shape
        feature, f = self._maps(x, hw_shape)
        maps = dict(feature=feature, delta=self.delta(x, hw_shape))
        if self.pa is not None:
            maps['attention'] = self.transform(self.pa(f))
        return maps

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, rank={self.rank}, '
                f'groups={self.groups}, kernel_sizes={self.kernel_sizes}, '
                f'branches={self.branches!r}')


def adapter_modules(model: nn.Module) -> Iterator[Tuple[str, SiteAdapter]]:
    """Yield ``(name, module)`` for every site adapter (MSLoRA, Mona) in
    ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SiteAdapter):
            yield name, module


def adapter_parameter_names(model: nn.Module) -> List[str]:
    """Names (relative to ``model``) of all adapter parameters."""
    return [
        f'{prefix}.{name}' if prefix else name
        for prefix, adapter in adapter_modules(model)
        for name, _ in adapter.named_parameters()
    ]
