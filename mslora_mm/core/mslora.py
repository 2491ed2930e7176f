"""The MSLoRA adapter: multi-scale low-rank adaptation by attention reweighting.

``F_hat = F + Up(Pv(F') * T(Pa(F')))`` with
``T(z) = PW(GELU(LN(sum_k GELU(DW_k(z)))))`` (see ``docs/method.md``).
"""
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .fused_branches import fused_branch_sum, use_fused

BRANCHES = ('both', 'linear', 'nonlinear')
#: what ``channels_last``, ``with_cp``, ``band_rows`` and ``fused_branches``
#: set to 'auto' choose per device type (docs/benchmarks.md): on CPU all four
#: pay (measured); on CUDA, not measured yet, the stock layout and one band
#: with the recompute (memory bounds a GPU's batch); the kernel is CPU-only
AUTO_CHOICES = {'cpu': dict(channels_last=True, with_cp=True, band_rows=32,
                            fused_branches=True),
                'cuda': dict(channels_last=False, with_cp=True,
                             band_rows=None, fused_branches=False)}
#: the adapter's attribute name in its host module (and state-dict keys)
ADAPTER_NAME = 'mslora'


def auto_choice(option: str, device: torch.device) -> Union[bool, int, None]:
    """What ``option='auto'`` chooses on ``device`` (CUDA's choice for other
    accelerators)."""
    return AUTO_CHOICES.get(device.type, AUTO_CHOICES['cuda'])[option]


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
        channels_last (bool | str): compute ``H`` in the channels-last
            memory format when gradients are on (faster depthwise backward
            on CPU; same mathematics; inference keeps NCHW); 'auto': as
            ``AUTO_CHOICES`` says for the input's device. Defaults to False.
        with_cp (bool | str): recompute ``H`` in backward instead of storing
            its intermediate maps (less memory, one extra adapter forward);
            'auto' as for ``channels_last``. Defaults to False.
        band_rows (int | str, optional): when gradients are on, compute
            ``H`` in bands of this many rows, each with a halo of
            ``max(kernel_sizes) // 2`` rows for the depthwise convolutions
            (recomputed band by band with ``with_cp``): smaller temporaries,
            same mathematics. Not with ``global_context`` (there 'auto' is
            one band); 'auto' as for ``channels_last``. Defaults to None
            (one band).
        fused_branches (bool | str): compute ``sum_k GELU(DW_k(z))`` of
            float32/float64 CPU maps in one native kernel, in training and
            inference (``fused_branches.py``, built on first use; same
            mathematics within float tolerance, faster); 'auto' as for
            ``channels_last``, and PyTorch's layers where the kernel cannot
            be built. Defaults to False.
        site (str, optional): where the adapter sits, used in error messages.

    Shapes:
        ``(B, C, H, W)`` maps, or ``(B, N, C)`` tokens with ``hw_shape=(H, W)``;
        the output has the input's shape.
    """
    _abbr_ = ADAPTER_NAME  # the plugin's name in mmdet's ResNet blocks

    def __init__(self,
                 in_channels: int,
                 rank: int = 128,
                 groups: int = 4,
                 kernel_sizes: Sequence[int] = (3, 5, 7),
                 branches: str = 'both',
                 channel_shuffle: bool = False,
                 global_context: bool = False,
                 gate: bool = False,
                 pre_norm: bool = False,
                 channels_last: Union[bool, str] = False,
                 with_cp: Union[bool, str] = False,
                 band_rows: Union[int, str, None] = None,
                 fused_branches: Union[bool, str] = False,
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
        _check(branches in BRANCHES,
               f'branches={branches!r} is unknown; use one of {BRANCHES}',
               where)
        _check(len(kernel_sizes) > 0 and all(
            isinstance(k, int) and k >= 1 and k % 2 == 1
            for k in kernel_sizes),
               f'kernel_sizes={kernel_sizes} must be odd ints >= 1 '
               '(e.g. (3, 5, 7))', where)
        for name, value in (('channels_last', channels_last),
                            ('with_cp', with_cp),
                            ('fused_branches', fused_branches)):
            _check(value in (True, False, 'auto'),
                   f"{name}={value!r} must be True, False or 'auto'", where)
        _check(band_rows in (None, 'auto') or (
            isinstance(band_rows, int) and band_rows >= 1),
               f"band_rows={band_rows!r} must be None, 'auto' or an int "
               '>= 1', where)
        _check(band_rows in (None, 'auto') or not global_context,
               'band_rows needs global_context=False (the context pools '
               'the whole map); set band_rows=None', where)
        self.in_channels = in_channels
        self.rank = rank
        self.groups = groups
        self.kernel_sizes = kernel_sizes
        self.branches = branches
        self.use_shuffle = channel_shuffle
        self.pre_norm = pre_norm
        self.channels_last = channels_last
        self.with_cp = with_cp
        self.band_rows = band_rows
        self.fused_branches = fused_branches
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

    def transform(self, z: Tensor, fused: Union[bool, str] = False,
                  rows: Optional[Tuple[int, int]] = None) -> Tensor:
        """Multi-scale transformation ``T``: ``(B, D, H, W) -> (B, D, H, W)``,
        or its rows ``r0:r1`` only if ``rows=(r0, r1)`` (``z``'s other rows
        feed the depthwise convolutions); ``fused``: a ``fused_branches``
        setting for the branches."""
        r0, r1 = rows or (0, z.shape[2])
        context = self.context(F.adaptive_avg_pool2d(z, 1)) \
            if self.context is not None else None
        if use_fused(fused, auto_choice('fused_branches', z.device), z,
                     self.where):  # computes rows r0:r1 only
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

    def delta(self, x: Tensor, hw_shape: Optional[Tuple[int, int]] = None,
              rows: Optional[Tuple[int, int]] = None,
              fused: Union[bool, str] = False) -> Tensor:
        """The reweighting ``H(F')`` of the adapter's input ``x`` (a map, or
        tokens with ``hw_shape``) as a ``(B, C, H, W)`` map, or its rows
        ``r0:r1`` only if ``rows=(r0, r1)``; ``fused`` as for
        ``transform``."""
        height = self._height(x, hw_shape)
        r0, r1 = rows or (0, height)
        halo = max(self.kernel_sizes) // 2 if self.pa is not None else 0
        a0, a1 = max(r0 - halo, 0), min(r1 + halo, height)
        fa = self._maps(x, hw_shape, (a0, a1))[1]  # rows and convs' halo
        fv = fa[:, :, r0 - a0:r1 - a0]
        if self.branches != 'linear':
            t = self.transform(self.pa(fa), fused, (r0 - a0, r1 - a0))
        if self.branches == 'linear':
            h = self.pv(fv)
        elif self.branches == 'nonlinear':
            h = t
        else:
            h = self.pv(fv) * t
        if self.use_shuffle:
            h = channel_shuffle(h, self.groups)
        return self.up(h)

    def resolved(self, option: str, device: torch.device
                 ) -> Union[bool, int, None]:
        """``channels_last``, ``with_cp``, ``band_rows`` or ``fused_branches``
        as set, 'auto' resolved for ``device``."""
        value = getattr(self, option)
        if value != 'auto':
            return value
        if option == 'band_rows' and self.global_context:
            return None
        return auto_choice(option, device)

    def residual(self, x: Tensor,
                 hw_shape: Optional[Tuple[int, int]]) -> Tensor:
        """``delta`` as the options say: the branches fused; when gradients
        are on also channels-last, recomputed from the input alone
        (``LN_in`` included), in bands."""
        if not (torch.is_grad_enabled() and (
                x.requires_grad or self.up.weight.requires_grad)):
            return self.delta(x, hw_shape, fused=self.fused_branches)
        if x.dim() == 4 and self.resolved('channels_last', x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        height = self._height(x, hw_shape)
        step = self.resolved('band_rows', x.device) or height
        bands = [(r, min(r + step, height)) for r in range(0, height, step)]
        fused = self.fused_branches
        if self.resolved('with_cp', x.device):
            parts = [checkpoint(self.delta, x, hw_shape, band, fused,
                                use_reentrant=False) for band in bands]
        else:
            parts = [self.delta(x, hw_shape, band, fused) for band in bands]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)

    @staticmethod
    def _height(x: Tensor, hw_shape: Optional[Tuple[int, int]]) -> int:
        """H of a map, or of tokens laid out on ``hw_shape``."""
        if x.dim() == 4:
            return x.shape[2]
        if hw_shape is None:
            raise ValueError('MSLoRA: token input (B, N, C) needs '
                             'hw_shape=(H, W)')
        return hw_shape[0]

    def _maps(self, x: Tensor, hw_shape: Optional[Tuple[int, int]],
              rows: Optional[Tuple[int, int]] = None
              ) -> Tuple[Tensor, Tensor]:
        """``(F, F')`` as ``(B, C, H, W)`` maps (rows ``r0:r1`` only, if
        given), ``F' = LN_in(F)`` if ``pre_norm`` (tokens are normalised
        before they are laid out on their ``(H, W)`` grid)."""
        if x.dim() == 4:
            if rows is not None:
                x = x[:, :, rows[0]:rows[1]]
            if self.norm_in is None:
                return x, x
            return x, self.norm_in(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        (b, _, c), (height, width) = x.shape, hw_shape
        if rows is not None:
            x = x[:, rows[0] * width:rows[1] * width]
            height = rows[1] - rows[0]
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
