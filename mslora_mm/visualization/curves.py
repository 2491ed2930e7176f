"""Curves of one or several runs from mmengine's ``vis_data/scalars.json``:
a panel per key, a line per run."""
import glob
import json
import os.path as osp
from typing import Dict, List, Sequence, Tuple


def scalar_files(work_dir: str) -> List[str]:
    if osp.isfile(work_dir):
        return [work_dir]
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        raise FileNotFoundError(
            f'{work_dir} holds no */vis_data/scalars.json (is it an mmengine '
            'work dir?)')
    return files


def read_curves(work_dir: str, keys: Sequence[str]
                ) -> Dict[str, List[Tuple[float, float]]]:
    """``(step, value)`` points of each key in the run(s) of ``work_dir``;
    an error naming the keys no line holds."""
    curves: Dict[str, List[Tuple[float, float]]] = {k: [] for k in keys}
    available = set()
    for path in scalar_files(work_dir):
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f'{path} line {number} is not JSON: '
                                     f'{line[:80]!r}') from None
                available.update(entry)
                for key in keys:
                    if key in entry:
                        curves[key].append((entry.get('step', len(
                            curves[key])), float(entry[key])))
    missing = [k for k in keys if not curves[k]]
    if missing:
        shown = ', '.join(sorted(available - {'step', 'epoch', 'iter'}))
        raise ValueError(f'{work_dir}: no value logged for {missing}; '
                         f'logged keys: {shown}')
    return curves


def plot_curves(runs: Dict[str, Dict[str, List[Tuple[float, float]]]],
         keys: Sequence[str]):
    """The figure: a panel per key, a line per run."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(keys), squeeze=False,
                             figsize=(5 * len(keys), 3.6))
    for ax, key in zip(axes[0], keys):
        for label, curves in runs.items():
            ax.plot(*zip(*curves[key]), label=label,
                    marker='o' if len(curves[key]) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel('step')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
