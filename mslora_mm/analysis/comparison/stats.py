"""The statistics of a comparison (``compare_tuning.py``): per mode the
mean and sample standard deviation of each metric over seeds, the selection
runs' means per learning rate, and the paired difference of two modes over
the seeds both ran, with its Student-t interval and reading."""
import math
import statistics
from typing import Dict, List, Sequence

#: the prefix of a metric on the final runs' second test split
SECOND = 'second test split: '


def summarise(runs: List[dict], metrics: List[str]) -> Dict[str, dict]:
    """Per mode: its learning rate and variant, and the per-seed values,
    mean and sample std of each metric (on a second test split too, as
    ``SECOND + metric``, where every run has one) and cost over seeds."""
    summary = {}
    for mode in dict.fromkeys(r['mode'] for r in runs):
        rs = [r for r in runs if r['mode'] == mode]
        values = {k: [r['metrics'][k] for r in rs] for k in metrics}
        if all(r.get('second_metrics') for r in rs):  # a second test split
            values.update({SECOND + k: [r['second_metrics'][k] for r in rs]
                           for k in metrics if k in rs[0]['second_metrics']})
        values['train_s'] = [r['train_s'] for r in rs]
        values['peak_memory_mb'] = [r['peak_memory_mb'] for r in rs]
        summary[mode] = dict(
            lr=rs[0]['lr'], variant=rs[0].get('variant', ''),
            seeds=[r['seed'] for r in rs], values=values,
            trainable_params=rs[0]['trainable_params'],
            backbone_trainable_params=rs[0]['backbone_trainable_params'],
            mean={k: statistics.mean(v) for k, v in values.items()},
            std={k: statistics.stdev(v) if len(v) > 1 else 0.0
                 for k, v in values.items()})
    return summary


def selection_table(runs: List[dict], metric: str
                    ) -> Dict[str, Dict[str, dict]]:
    """Per mode and learning rate (as ``'%g'``), the ``metric`` of the
    selection runs of the config as it is (no variant): values by seed and
    their mean."""
    table: Dict[str, Dict[str, dict]] = {}
    for r in runs:
        if r.get('variant'):
            continue
        cell = table.setdefault(r['mode'], {}).setdefault(
            f'{r["lr"]:g}', dict(lr=r['lr'], seeds=[], values=[]))
        cell['seeds'].append(r['seed'])
        cell['values'].append(r['metrics'][metric])
    for cells in table.values():
        for cell in cells.values():
            cell['mean'] = statistics.mean(cell['values'])
    return table


def variant_table(runs: List[dict], lrs: Dict[str, float], metric: str
                  ) -> Dict[str, Dict[str, dict]]:
    """Per mode, the selection runs at its chosen lr (``lrs``) by variant
    tag ('' the config as it is): ``metric`` values by seed, their mean,
    and the held-out ``curve`` of each seed where the runs logged one
    (``[[iter, epoch, value], ...]``)."""
    table: Dict[str, Dict[str, dict]] = {}
    for r in runs:
        if r['mode'] not in lrs or r['lr'] != lrs[r['mode']]:
            continue
        cell = table.setdefault(r['mode'], {}).setdefault(
            r.get('variant', ''), dict(seeds=[], values=[], curves=[]))
        cell['seeds'].append(r['seed'])
        cell['values'].append(r['metrics'][metric])
        if r.get('curve'):
            cell['curves'].append([[e['iter'], e['epoch'],
                                    e['metrics'][metric]]
                                   for e in r['curve']])
    for cells in table.values():
        for cell in cells.values():
            cell['mean'] = statistics.mean(cell['values'])
    return table


def paired_difference(values: Sequence[float], reference: Sequence[float],
                      confidence: float = 0.95) -> dict:
    """``values - reference`` paired by seed: mean, sample std, n, the
    Student-t interval at ``confidence`` and its reading: ``'ahead'`` (the
    interval above 0), ``'behind'`` (below) or ``'not resolved'`` (it
    holds 0, or fewer than 2 pairs)."""
    if len(values) != len(reference):
        raise ValueError(f'paired difference of {len(values)} against '
                         f'{len(reference)} values: give the same seeds')
    diffs = [a - b for a, b in zip(values, reference)]
    n = len(diffs)
    mean = statistics.mean(diffs)
    if n < 2:
        return dict(mean=mean, std=None, n=n, low=None, high=None,
                    word='not resolved')
    from scipy import stats
    std = statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    word = 'ahead' if low > 0 else 'behind' if high < 0 else 'not resolved'
    return dict(mean=mean, std=std, n=n, low=low, high=high, word=word)


def versus(summary: Dict[str, dict], metric: str,
           reference: str = 'mslora') -> Dict[str, dict]:
    """Each other mode's paired difference (mode - ``reference``) in
    ``metric`` over the seeds both ran, with its 95% interval."""
    if reference not in summary:
        return {}
    ref = summary[reference]
    ref_by_seed = dict(zip(ref['seeds'], ref['values'][metric]))
    out = {}
    for mode, s in summary.items():
        if mode == reference:
            continue
        pairs = [(v, ref_by_seed[seed])
                 for seed, v in zip(s['seeds'], s['values'][metric])
                 if seed in ref_by_seed]
        if pairs:
            out[mode] = paired_difference(*zip(*pairs))
    return out
