"""How the adapters compute, never what: the runtime settings.

The adapters' arguments are the method (``MSLoRA(rank=..., ...)``, saved in
configs and adapter files); how their arithmetic is laid out is chosen here,
per device, and never saved (as timm's ``layers/config.py``):

- ``channels_last`` (bool): compute ``H`` in the channels-last memory format
  when gradients are on (a faster depthwise backward on CPU);
- ``band_rows`` (int or None): when gradients are on and the adapter
  recomputes (``with_cp``), compute ``H`` in bands of this many rows, each
  with the depthwise convolutions' halo (smaller temporaries in the
  recompute); None: one band (as always with ``global_context``);
- ``kernel`` (str): what computes the adapter: ``'stock'`` (PyTorch's
  layers), ``'native'`` (``sum_k GELU(DW_k(z))`` of float CPU maps in the
  native C++ kernel, ``ops/native.py``; PyTorch's layers where it cannot be
  built, unless chosen explicitly) or ``'triton'`` (the whole adapter as
  one operator with Triton kernels, ``ops/fused_adapter.py``: CUDA, or the
  CPU under ``TRITON_INTERPRET=1`` when chosen explicitly). The setting
  ``fused_branches`` it replaces is still read (True: ``'native'``,
  False: ``'stock'``), with a message naming ``kernel``.
- ``fused_optimizer`` (bool): Adam/AdamW built by the plugin's optimizer
  constructor take ``fused=True`` (one kernel a step for all parameters,
  AMP's loss scaling included) unless a config sets ``fused``; for every
  training mode alike.

Each defaults to what ``DEVICE_DEFAULTS`` measured for the input's device
(docs/benchmarks.md). Override in code::

    from mslora_mm.core import runtime
    runtime.set_runtime(band_rows=None)          # one band from now on
    with runtime.runtime(kernel='stock'):        # inside the block only
        ...
    runtime.set_runtime(band_rows=DEFAULT)       # the device's again

or for a whole process with ``MSLORA_RUNTIME=channels_last=0,band_rows=none``.
The same mathematics in every setting, within float tolerance. Keep a
forward and its backward under the same settings (``with_cp`` recomputes
the forward in backward).
"""
import os
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple, Union

import torch

from .log import log

Value = Union[bool, int, str, None]
OPTIONS = ('channels_last', 'band_rows', 'kernel', 'fused_optimizer')
KERNELS = ('stock', 'native', 'triton')
#: the option ``kernel`` replaced, and its values' meaning
LEGACY = 'fused_branches'
#: what each option is per device type, measured (docs/benchmarks.md): on
#: CPU all three pay; on CUDA (an H200, gpu_check's cost table) bands cost
#: 1.4-1.6x the step, channels-last moved it by under 4%, and the native
#: kernel is CPU-only: the stock layout in one band. ``'triton'`` becomes
#: CUDA's default once a GPU has measured it faster (docs/benchmarks.md).
#: The fused optimizer is PyTorch's own choice for CUDA parameters; the CPU
#: keeps the measured for-each one. Other accelerators take CUDA's.
DEVICE_DEFAULTS: Dict[str, Dict[str, Value]] = {
    'cpu': dict(channels_last=True, band_rows=32, kernel='native',
                fused_optimizer=False),
    'cuda': dict(channels_last=False, band_rows=None, kernel='stock',
                 fused_optimizer=True),
}
#: PyTorch's layers in the stock memory format, in one band: the computation
#: that every other setting reproduces
STOCK: Dict[str, Value] = dict(channels_last=False, band_rows=None,
                               kernel='stock', fused_optimizer=False)
#: the environment variable read at import: ``name=value`` pairs
ENV_VAR = 'MSLORA_RUNTIME'
#: the value that leaves an option to the device's default
DEFAULT = 'default'
_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off')


def _legacy(name: str, value: Union[Value, str], source: str
            ) -> Tuple[str, Union[Value, str]]:
    """``(name, value)`` with the replaced ``fused_branches=True/False``
    read as ``kernel='native'/'stock'`` (logged once)."""
    if name != LEGACY:
        return name, value
    if not isinstance(value, bool) and value != DEFAULT:
        raise ValueError(f'{source}: {LEGACY}={value!r} must be True or '
                         f"False; it is replaced by kernel={KERNELS}")
    new = value if value == DEFAULT else ('native' if value else 'stock')
    if source not in _REPORTED:
        _REPORTED.add(source)
        log(f'MSLoRA: runtime option {LEGACY}={value!r} ({source}) is read as '
            f'kernel={new!r}; {LEGACY} is replaced by kernel (one of '
            f'{KERNELS})')
    return 'kernel', new


def _checked(name: str, value: Value, source: str) -> Value:
    """``value`` if it is valid for option ``name``, else a ValueError
    naming ``source`` (where it was set)."""
    if name not in OPTIONS:
        raise ValueError(f'{source}: {name!r} is not a runtime option; use '
                         f'one of {OPTIONS}')
    if name == 'band_rows':
        ok = value is None or (isinstance(value, int) and
                               not isinstance(value, bool) and value >= 1)
        kind = 'an int >= 1 or None (one band)'
    elif name == 'kernel':
        ok, kind = value in KERNELS, f'one of {KERNELS}'
    else:
        ok, kind = isinstance(value, bool), 'True or False'
    if not ok and value != DEFAULT:
        raise ValueError(f'{source}: {name}={value!r} must be {kind}, or '
                         f"{DEFAULT!r} (the device's default)")
    return value


def _parse(text: str) -> Dict[str, Value]:
    """``'channels_last=0,band_rows=16'`` as a settings dict; errors name
    ``ENV_VAR``."""
    settings: Dict[str, Value] = {}
    for item in filter(None, (s.strip() for s in text.split(','))):
        name, sep, raw = (s.strip() for s in item.partition('='))
        raw = raw.lower()
        if not sep:
            raise ValueError(f'{ENV_VAR}={text!r}: {item!r} is not '
                             'name=value (e.g. channels_last=0,band_rows=16)')
        if raw in (DEFAULT, ''):
            value: Union[Value, str] = DEFAULT
        elif name == 'band_rows' and raw == 'none':
            value = None
        elif name == 'band_rows' and raw.isdigit():
            value = int(raw)
        elif name != 'kernel' and raw in _TRUE + _FALSE:
            value = raw in _TRUE
        else:
            value = raw  # rejected by _checked with the option's kinds
        name, value = _legacy(name, value, f'{ENV_VAR}={text!r}')
        settings[name] = _checked(name, value, f'{ENV_VAR}={text!r}')
    return settings


#: the messages logged once per process
_REPORTED: set = set()
#: the settings chosen in code or by the environment (the rest: defaults)
_CHOSEN: Dict[str, Value] = {
    k: v for k, v in _parse(os.environ.get(ENV_VAR, '')).items()
    if v != DEFAULT}


def set_runtime(**options: Union[Value, str]) -> Dict[str, Value]:
    """Choose runtime options for every adapter from now on (``DEFAULT``:
    back to the device's default); returns the previous choices."""
    previous = dict(_CHOSEN)
    options = dict(_legacy(name, value, 'set_runtime')
                   for name, value in options.items())
    for name, value in options.items():
        _checked(name, value, 'set_runtime')
    for name, value in options.items():
        if value == DEFAULT:
            _CHOSEN.pop(name, None)
        else:
            _CHOSEN[name] = value
    return previous


@contextmanager
def runtime(**options: Union[Value, str]) -> Iterator[None]:
    """``set_runtime(**options)`` inside the block, the previous choices
    after it."""
    previous = set_runtime(**options)
    try:
        yield
    finally:
        _CHOSEN.clear()
        _CHOSEN.update(previous)


def runtime_option(name: str, device: torch.device) -> Value:
    """Option ``name`` for computing on ``device``: as chosen, else the
    device type's default."""
    if name in _CHOSEN:
        return _CHOSEN[name]
    return DEVICE_DEFAULTS.get(device.type, DEVICE_DEFAULTS['cuda'])[name]


def is_chosen(name: str) -> bool:
    """Whether option ``name`` was chosen (in code or by ``ENV_VAR``) rather
    than left to the device's default."""
    return name in _CHOSEN


def chosen_options() -> Dict[str, Value]:
    """The options chosen in code or by ``ENV_VAR`` (for logs and
    reports)."""
    return dict(_CHOSEN)


def describe(device: Optional[torch.device] = None) -> str:
    """The options in force on ``device`` (default CPU), one line."""
    device = device or torch.device('cpu')
    return ', '.join(
        f'{name}={runtime_option(name, device)!r}'
        + ('' if is_chosen(name) else ' (default)') for name in OPTIONS)


def without_runtime_keys(cfg: Dict, report: bool = True) -> Dict:
    """``cfg`` (adapter arguments) without the runtime options that configs
    and adapter files written before this module carried (with ``report``,
    logged once per option: they are chosen here now), and
    ``with_cp='auto'`` as the ``True`` it chose on every device."""
    cfg = dict(cfg)
    for name in OPTIONS + (LEGACY, ):
        if name in cfg:
            value = cfg.pop(name)
            if report and name not in _REPORTED:
                _REPORTED.add(name)
                log(f'MSLoRA: adapter_cfg.{name}={value!r} is ignored: it is a '
                    'runtime option now (mslora_mm.core.runtime.set_runtime '
                    f'or {ENV_VAR}; in force: {describe()})')
    if cfg.get('with_cp') == 'auto':
        cfg['with_cp'] = True
    return cfg

