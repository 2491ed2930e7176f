"""Where the adapters reweight the backbone's features, for one image: per
adapter site, ``‖H(F')‖`` (L2 over channels, per pixel) and the nonlinear
branch's ``T(Pa(F'))`` (mean over channels), overlaid on the image."""
from fnmatch import fnmatchcase
from functools import partial
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate

from ..apis import test_pipeline
from ..models import adapter_modules


def adapter_maps(model, image: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """Run the backbone on ``image``; per adapter site (the adapted module's
    name in the backbone), the adapter's ``explain`` maps for that image
    (batch dimension removed)."""
    data = test_pipeline(model.cfg)(dict(img_path=image, img_id=0))
    inputs = model.data_preprocessor(pseudo_collate([data]))['inputs']
    found: Dict[str, Dict[str, torch.Tensor]] = {}

    def record(name: str, adapter, args: tuple) -> None:
        if name not in found:  # the first call: the image's own features
            found[name] = {k: v[0] for k, v in adapter.explain(*args).items()}

    handles = [adapter.register_forward_pre_hook(
        partial(record, name.rsplit('.', 1)[0]))  # the host module's name
        for name, adapter in adapter_modules(model.backbone)]
    try:
        with torch.no_grad():
            model.backbone(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found


def choose_sites(names: List[str], shapes: Dict[str, tuple],
                 patterns: Optional[List[str]]) -> List[str]:
    """``patterns``' matches in order, or the last site per resolution."""
    if not names:
        raise ValueError('the model has no MSLoRA adapters to show')
    if not patterns:
        last = {shapes[n]: n for n in names}
        return [n for n in names if n in last.values()]
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f'--sites {pattern!r} matches no adapter; the '
                             f'model has: {", ".join(names)}')
        chosen += [n for n in hits if n not in chosen]
    return chosen


def site_statistics(maps: Dict[str, torch.Tensor]) -> Dict[str, float]:
    delta = maps['delta'].norm(dim=0)
    ratio = delta / maps['feature'].norm(dim=0).clamp_min(1e-12)
    return dict(delta_ratio_mean=float(ratio.mean()),
                delta_ratio_max=float(ratio.max()),
                delta_norm_mean=float(delta.mean()),
                delta_norm_max=float(delta.max()))


def panels(maps: Dict[str, torch.Tensor], size: tuple
           ) -> Dict[str, np.ndarray]:
    """``‖H‖`` and mean ``T(Pa)`` of one site, resized to ``size`` (H, W)."""
    out = {'‖H(F\')‖': maps['delta'].norm(dim=0)}
    if 'attention' in maps:
        out['T(Pa(F\')), channel mean'] = maps['attention'].mean(dim=0)
    return {k: F.interpolate(v[None, None].float(), size=size,
                             mode='bilinear', align_corners=False)[0, 0]
            .numpy() for k, v in out.items()}


def draw_reweighting_maps(image: np.ndarray, sites: List[str],
         maps: Dict[str, Dict[str, torch.Tensor]]):
    """The figure: a row per site, the image then its overlaid maps."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(sites), 3, squeeze=False,
                             figsize=(10, 3.2 * len(sites)))
    for row, site in zip(axes, sites):
        row[0].imshow(image)
        row[0].set_title(f'{site}\n{tuple(maps[site]["feature"].shape)}',
                         fontsize=8)
        for ax, (title, values) in zip(
                row[1:], panels(maps[site], image.shape[:2]).items()):
            ax.imshow(image)
            shown = ax.imshow(values, cmap='jet', alpha=0.5)
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(title, fontsize=8)
        for ax in row:
            ax.axis('off')
    fig.tight_layout()
    return fig
