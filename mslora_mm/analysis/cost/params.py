"""The one parameter counter of the project."""
from typing import Dict, Union

import torch.nn as nn

from ...core.mslora import adapter_modules, unwrap_model


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def count_parameters(model: nn.Module) -> Dict[str, Union[int, float]]:
    """Count a detector's (or a bare backbone's) parameters by role.

    Returns a dict with the ints ``backbone_frozen`` (backbone without
    adapters), ``adapter`` (= ``adapter_projection`` + ``adapter_transformation``
    + ``adapter_input_norm``), ``neck``, ``heads`` (everything else),
    ``trainable`` (``requires_grad``), ``total``, and the float
    ``adapter_pct_of_backbone`` = adapter / backbone_frozen * 100.
    """
    model = unwrap_model(model)
    backbone = getattr(model, 'backbone', model)
    neck = getattr(model, 'neck', None)
    adapters = [m for _, m in adapter_modules(backbone)]
    adapter = _numel(p for m in adapters for p in m.parameters())
    projection = _numel(p for m in adapters for p in m.projection_parameters())
    input_norm = _numel(p for m in adapters
                        if getattr(m, 'norm_in', None) is not None
                        for p in m.norm_in.parameters())
    backbone_all = _numel(backbone.parameters())
    neck_all = _numel(neck.parameters()) if neck is not None else 0
    total = _numel(model.parameters())
    backbone_frozen = backbone_all - adapter
    return dict(
        backbone_frozen=backbone_frozen,
        adapter=adapter,
        adapter_projection=projection,
        adapter_transformation=adapter - projection - input_norm,
        adapter_input_norm=input_norm,
        neck=neck_all,
        heads=total - backbone_all - neck_all,
        trainable=_numel(p for p in model.parameters() if p.requires_grad),
        total=total,
        adapter_pct_of_backbone=100.0 * adapter / max(backbone_frozen, 1))


def format_parameter_table(counts: Dict[str, Union[int, float]]) -> str:
    """Render :func:`count_parameters` as a fixed-width table (M and % of
    the pretrained backbone)."""
    base = max(counts['backbone_frozen'], 1)
    rows = [('part', 'params', '% of backbone')]
    for key in ('backbone_frozen', 'adapter', 'adapter_projection',
                'adapter_transformation', 'adapter_input_norm', 'neck',
                'heads', 'trainable', 'total'):
        rows.append((key, f'{counts[key] / 1e6:.3f}M',
                     f'{100.0 * counts[key] / base:.2f}%'))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, '-' * len(lines[0]))
    return '\n'.join(lines)
