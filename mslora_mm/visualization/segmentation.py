"""Semantic segmentations side by side: per image, the image, its ground
truth and the predictions of several runs (one row an image)."""
from typing import Dict, List, Sequence

import numpy as np


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]],
             ignore_index: int = 255) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB in ``palette``;
    ``ignore_index`` and values outside the palette are black."""
    colours = np.zeros((max(len(palette), ignore_index + 1, int(labels.max())
                            + 1), 3), np.uint8)
    colours[:len(palette)] = np.asarray(palette, np.uint8)
    colours[ignore_index] = 0
    return colours[labels]


def pixel_accuracy(pred: np.ndarray, gt: np.ndarray,
                   ignore_index: int = 255) -> float:
    """The share (%) of labelled pixels of ``gt`` that ``pred`` gets right."""
    labelled = gt != ignore_index
    return float((pred[labelled] == gt[labelled]).mean() * 100)


def draw_segmentation_panel(rows: List[dict], runs: List[str],
                            classes: Sequence[str],
                            palette: Sequence[Sequence[int]],
                            ignore_index: int = 255):
    """A figure of ``len(rows)`` rows: the image, its ground truth, then
    each run's prediction with its pixel accuracy; a legend of the class
    colours below. ``rows``: per image ``name``, ``image`` (H, W, 3) RGB,
    ``gt`` (H, W) and ``preds`` {run: (H, W)}."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    cols = 2 + len(runs)
    fig, axes = plt.subplots(len(rows), cols, squeeze=False,
                             figsize=(2.6 * cols, 2.2 * len(rows) + 0.6))
    for r, row in enumerate(rows):
        panels: Dict[str, np.ndarray] = {
            row['name']: row['image'],
            'ground truth': colorize(row['gt'], palette, ignore_index)}
        for run in runs:
            acc = pixel_accuracy(row['preds'][run], row['gt'], ignore_index)
            panels[f'{run} ({acc:.1f}%)'] = colorize(row['preds'][run],
                                                     palette, ignore_index)
        for ax, (title, picture) in zip(axes[r], panels.items()):
            ax.imshow(picture)
            ax.set_title(title, fontsize=8)
            ax.axis('off')
    fig.legend(handles=[Patch(color=np.asarray(c) / 255, label=n)
                        for n, c in zip(classes, palette)],
               loc='lower center', ncol=min(len(classes), 6), fontsize=7)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
