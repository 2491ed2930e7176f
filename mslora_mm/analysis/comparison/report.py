"""The report of ``compare_tuning.py``: the protocol in words, what was
held equal, the final table, paired differences to MSLoRA, the selection
table (markdown and JSON) and the plots; sweeps over several reports."""
import json
import os
import os.path as osp
import shlex
from typing import Dict, List, Optional, Sequence

from .provenance import same_code
from .runner import choose_metrics
from .stats import (SECOND, selection_table, summarise, variant_table,
                    versus)
from .variants import Variant


def write_report(out: str, config: str, argv: List[str], modes: List[str],
                 wanted: Optional[List[str]], protocol: dict,
                 held: Dict[str, Dict[str, str]], selection_runs: List[dict],
                 final_runs: List[dict], code: dict) -> str:
    """Write ``results.json``, ``results.md``, ``selection.png`` (where lrs
    were chosen) and ``budget.png`` to ``out``; return the markdown.
    ``protocol``: holdout, holdout_seed, holdout_groups, grids,
    first_grids, extend_grid, extended, chosen, select_seeds, final_seeds,
    mona_rank, lora_rank, train_test_shared; ``held``: per mode its
    ``protocol.conditions``; ``code``: the running code
    (``provenance.code_version``), against which each run's is flagged."""
    metrics = choose_metrics(final_runs, wanted)
    summary = summarise(final_runs, metrics)
    diffs = versus(summary, metrics[0])
    table = selection_table(selection_runs, metrics[0]) \
        if selection_runs else {}
    refined = _refined(selection_runs, protocol['chosen'], metrics[0])
    first = selection_runs[0] if selection_runs else {}
    protocol = dict(protocol, selected=bool(selection_runs), sizes=dict(
        train=final_runs[0]['train_size'], test=final_runs[0]['eval_size'],
        fit=first.get('train_size'), holdout=first.get('eval_size'),
        holdout_by=_drawn(first) if first else None,
        shared_images=first.get('shared_images')), code=code)
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(dict(config=config, modes=modes,
                       seeds=len(protocol['final_seeds']), metrics=metrics,
                       protocol=protocol, conditions=held, summary=summary,
                       versus_mslora=diffs, selection=table,
                       selection_variants=refined, runs=final_runs,
                       selection_runs=selection_runs), f, indent=1)
    command = shlex.join(['python', 'tools/analysis/compare_tuning.py',
                          *argv])
    text = [f'# `{config}`: tuning modes compared\n',
            f'Command: `{command}`\n', '## Protocol\n',
            protocol_text(protocol, modes, metrics[0]),
            conditions_text(held), '\n## Final runs (test split)\n',
            markdown_table(summary, metrics, _stale_modes(final_runs, code))]
    if diffs:
        text += ['\n## Against MSLoRA\n', versus_table(diffs, metrics[0])]
    second = SECOND + metrics[0]
    if diffs and all(second in s['mean'] for s in summary.values()):
        text += ['\n## Against MSLoRA on the second test split\n',
                 versus_table(versus(summary, second), second)]
    if table:
        text += ['\n## Selection (held-out part of the training set)\n',
                 selection_markdown(table, protocol['chosen'], metrics[0]),
                 '\n![selection](selection.png)\n']
        plot_selection(table, metrics[0], osp.join(out, 'selection.png'))
    text += _refined_text(refined, protocol['variants'], metrics[0], out)
    text += ['\n![budget](budget.png)\n', '## Code that made the runs\n',
             code_text(selection_runs + final_runs, code)]
    plot_budget(summary, metrics[0], osp.join(out, 'budget.png'))
    markdown = '\n'.join(text)
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(markdown)
    return markdown


def write_selection(out: str, config: str, argv: List[str],
                    wanted: Optional[List[str]], chosen: Dict[str, float],
                    selection_runs: List[dict], code: dict,
                    variants: Optional[Dict[str, str]] = None) -> str:
    """Write ``selection.json``, ``selection.md`` and ``selection.png`` (and
    ``curves.png`` where runs logged held-out curves) of a selection-only
    comparison to ``out``; return the markdown. ``code``: the running code
    (``provenance.code_version``); ``variants``: each mode's chosen
    ``Variant.tag``."""
    metrics = choose_metrics(selection_runs, wanted)
    table = selection_table(selection_runs, metrics[0])
    variants = variants or {m: '' for m in chosen}
    refined = _refined(selection_runs, chosen, metrics[0])
    first = selection_runs[0]
    sizes = dict(fit=first['train_size'], holdout=first['eval_size'],
                 holdout_by=_drawn(first),
                 shared_images=first.get('shared_images'))
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, 'selection.json'), 'w') as f:
        json.dump(dict(config=config, metrics=metrics, sizes=sizes,
                       chosen=chosen, variants=variants, selection=table,
                       selection_variants=refined, code=code,
                       selection_runs=selection_runs), f, indent=1)
    command = shlex.join(['python', 'tools/analysis/compare_tuning.py',
                          *argv])
    markdown = '\n'.join([
        f'# `{config}`: selection on the held-out part\n',
        f'Command: `{command}`\n',
        f'Fit {sizes["fit"]} / held out {sizes["holdout"]} items ('
        f'{sizes["holdout_by"]}; {_shared(sizes)}); the test split was not '
        'read.\n',
        selection_markdown(table, chosen, metrics[0]),
        '![selection](selection.png)\n',
        *_refined_text(refined, variants, metrics[0], out),
        '## Code that made the runs\n', code_text(selection_runs, code)])
    plot_selection(table, metrics[0], osp.join(out, 'selection.png'))
    with open(osp.join(out, 'selection.md'), 'w') as f:
        f.write(markdown)
    return markdown


def protocol_text(p: dict, modes: List[str], metric: str) -> str:
    """The protocol in words: the parts and their sizes, the grids, the
    selection and final seeds, the peers' budgets."""
    s = p['sizes']
    lines = []
    if p['selected']:
        lines.append(
            f'- Training set {s["train"]} items: fit {s["fit"]} / held out '
            f'{s["holdout"]} (fraction {p["holdout"]}, seed '
            f'{p["holdout_seed"]}, {s["holdout_by"]}; {_shared(s)}); test '
            f'split {s["test"]} items, not read during selection.')
        lines.append(
            '- Learning rates chosen per mode on the held-out part by '
            f'{metric} (mean over selection seeds {p["select_seeds"]}, '
            'unrounded), from: ' + '; '.join(
                f'{m} {", ".join(f"{lr:g}" for lr in g)}'
                for m, g in p['grids'].items()) + '.')
        if p.get('stages'):
            lines.append(
                '- Then each mode at its chosen lr, one setting at a time '
                '(the best held-out mean; a tie keeps the earlier value): ' +
                '; '.join(f'{_FIELDS[st["field"]]} from ' + ', '.join(
                    _value(st['field'], v) for v in next(iter(
                        st['values'].values()))) + ' (' + ', '.join(
                            st['values']) + ')' for st in p['stages']) +
                '. Chosen: ' + '; '.join(
                    f'{m} {Variant.parse(t).words()}'
                    for m, t in p['variants'].items()) + '.')
        if p.get('curve_every'):
            lines.append(f'- Selection runs scored the held-out part every '
                         f'{p["curve_every"]} epochs / iterations of their '
                         'loop besides the end (the curves); the end chose.')
        if p.get('extend_grid'):
            lines.append(
                f'- Grid rule (`--extend-grid {p["extend_grid"]}`): while a '
                'mode\'s best held-out score (ties included) is at an end of '
                'its grid, the next value ×~3 beyond it is added, at most '
                f'{p["extend_grid"]} times. Added: ' + (
                    '; '.join(f'{m} {", ".join(f"{lr:g}" for lr in v)}'
                              for m, v in p['extended'].items())
                    or 'none (every best inside its first grid)') + '.')
    else:
        lines.append(f'- Training set {s["train"]} items; test split '
                     f'{s["test"]} items.')
        lines.append('- **No learning-rate selection was made**: every mode '
                     'trained at ' + ', '.join(
                         f'{m} {lr:g}' for m, lr in p['chosen'].items()) +
                     ' (the config\'s lr, or a one-value --lr-grid).')
    lines.append(f'- Final runs: seeds {p["final_seeds"]}, whole training '
                 'set, evaluated once at the end on the test split.')
    lines.append(shared_line(p.get('train_test_shared') or []))
    if 'mona' in modes:
        lines.append(f'- Mona bottleneck {p["mona_rank"]}.')
    if 'lora' in modes:
        lines.append(f'- LoRA rank {p["lora_rank"] or "matched to MSLoRA"}.')
    return '\n'.join(lines) + '\n'


#: the refinement stages' fields in words
_FIELDS = dict(schedule='schedule length ×', weight_decay='weight decay',
               norm_eval='BatchNorm statistics')


def _value(field: str, value) -> str:
    if value is None:
        return 'the config\'s'
    if field == 'norm_eval':
        return 'frozen' if value else 'updated'
    return f'{value:g}'


def _refined(runs: List[dict], lrs: Dict[str, float], metric: str
             ) -> Dict[str, Dict[str, dict]]:
    """The variant table of ``runs`` where any run is a variant or logged a
    curve, else empty."""
    if not any(r.get('variant') or r.get('curve') for r in runs):
        return {}
    return variant_table(runs, lrs, metric)


def _refined_text(refined: Dict[str, Dict[str, dict]],
                  variants: Dict[str, str], metric: str, out: str
                  ) -> List[str]:
    """The markdown (and ``curves.png`` in ``out``) of the settings chosen
    after the lr; nothing when there are none."""
    if not refined:
        return []
    tags = sorted({t for cells in refined.values() for t in cells},
                  key=lambda t: (t != '', t))
    lines = ['\n### Settings chosen after the learning rate (each mode at '
             'its lr)\n', '| mode | ' + ' | '.join(
                 Variant.parse(t).words() for t in tags) + ' |',
             '|' + '---|' * (len(tags) + 1)]
    for mode, cells in refined.items():
        row = []
        for t in tags:
            cell = cells.get(t)
            text = '' if cell is None else f'{cell["mean"]:.3f}'
            row.append(f'**{text}**' if cell and t == variants.get(mode)
                       else text)
        lines.append(f'| {mode} | ' + ' | '.join(row) + ' |')
    lines.append(f'\n{metric} on the held-out part at the end of each run, '
                 'mean over the selection seeds; bold: the chosen setting.\n')
    if any(c['curves'] for cells in refined.values() for c in cells.values()):
        plot_curves(refined, variants, metric, osp.join(out, 'curves.png'))
        lines.append('![held-out curves](curves.png)\n')
    return ['\n'.join(lines)]


def conditions_text(held: Dict[str, Dict[str, str]]) -> str:
    """What was held equal across modes (a differing item per mode)."""
    modes = list(held)
    lines = ['\nHeld equal across modes:\n']
    for key, value in held[modes[0]].items():
        values = {m: held[m][key] for m in modes}
        if len(set(values.values())) == 1:
            lines.append(f'- {key}: `{value}`')
        else:
            lines.append(f'- {key} **differs**: ' + '; '.join(
                f'{m} `{v}`' for m, v in values.items()))
    return '\n'.join(lines) + '\n'


def _drawn(run: dict) -> str:
    """How a selection run's held-out part was drawn (runs made before
    the split said so: by its stratification)."""
    return run.get('holdout_by') or (
        'by class' if run.get('stratified') else 'by image')


def _shared(sizes: dict) -> str:
    n = sizes.get('shared_images')
    return 'images in both parts: not counted by the run' if n is None \
        else f'images in both parts: {n}'


def shared_line(pairs: List[List[str]]) -> str:
    """The protocol's line on training and test images that are the same
    file content."""
    if not pairs:
        return ('- No training image is byte-identical to a test image '
                '(sha256 of the files).')
    return (f'- **{len(pairs)} training image(s) byte-identical to a test '
            'image** (sha256 of the files): ' + '; '.join(
                f'`{osp.basename(a)}` = `{osp.basename(b)}`'
                for a, b in pairs) + '.')


def _stale_modes(runs: List[dict], code: dict) -> List[str]:
    return sorted({r['mode'] for r in runs
                   if not same_code(r.get('code'), code)})


def code_text(runs: List[dict], code: dict) -> str:
    """Every code version that made ``runs`` (source fingerprint, commit,
    library versions) with its runs; those not the current ``code``'s
    flagged."""
    groups: Dict[str, List[dict]] = {}
    made: Dict[str, Optional[dict]] = {}
    for r in runs:
        key = json.dumps(r.get('code'), sort_keys=True)
        groups.setdefault(key, []).append(r)
        made[key] = r.get('code')
    lines = [f'Current code: source `{code["fingerprint"][:12]}`, commit '
             f'`{(code.get("commit") or "none")[:10]}`'
             f'{" (modified)" if code.get("dirty") else ""}.\n',
             '| source | commit | versions | runs | current code? |',
             '|---|---|---|---|---|']
    for key, rs in groups.items():
        c = made[key] or {}
        versions = c.get('versions')
        text = ', '.join(f'{k} {v}' for k, v in versions.items()) \
            if isinstance(versions, dict) else str(versions or 'unknown')
        names = ', '.join(
            f'{r["phase"]} {r["mode"]} {r["lr"]:g}'
            f'{" " + r["variant"] if r.get("variant") else ""} s{r["seed"]}'
            for r in rs)
        current = 'yes' if same_code(made[key], code) else '**no**'
        lines.append(f'| `{(c.get("fingerprint") or "unknown")[:12]}` | '
                     f'`{(c.get("commit") or "none")[:10]}` | {text} | '
                     f'{names} | {current} |')
    lines.append('\nSource: a sha256 of the package\'s Python and native '
                 'sources; runs made by other code are kept (`--rerun-stale` '
                 'redoes them).')
    return '\n'.join(lines) + '\n'


def _count(n: int) -> str:
    return f'{n / 1e6:.2f}M' if n >= 1e5 else f'{n / 1e3:.1f}K'


def markdown_table(summary: Dict[str, dict], metrics: List[str],
                   stale: Sequence[str] = ()) -> str:
    """The final runs: per mode its lr, each metric's mean ± sample std and
    per-seed values, trainable parameters, train time and peak memory; a
    mode of ``stale`` (a run made by other code than the current) is marked
    †."""
    second = [SECOND + k for k in metrics
              if all(SECOND + k in s['mean'] for s in summary.values())]
    head = ['mode', 'lr'] + metrics + second + ['per seed', 'trainable',
                                       'of which backbone', 'train time (s)',
                                       'peak memory (MB)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for mode, s in summary.items():
        m, sd = s['mean'], s['std']
        setting = s.get('variant') and Variant.parse(s['variant']).words()
        row = [mode + (' †' if mode in stale else ''),
               f'{s["lr"]:g}' + (f' ({setting})' if setting else '')]
        row += [f'{m[k]:.3f} ± {sd[k]:.3f}' for k in metrics + second]
        row += [', '.join(f'{v:.3f}' for v in s['values'][metrics[0]]),
                _count(s['trainable_params']),
                _count(s['backbone_trainable_params']),
                f'{m["train_s"]:.0f} ± {sd["train_s"]:.0f}',
                f'{m["peak_memory_mb"]:.0f}']
        lines.append('| ' + ' | '.join(row) + ' |')
    seeds = sorted({seed for s in summary.values() for seed in s['seeds']})
    lines.append(f'\nMean ± sample standard deviation over seeds {seeds}; '
                 f'"per seed" lists {metrics[0]} in seed order.' + (
                     ' †: a run of the mode was made by other code than the '
                     'current (below).' if stale else ''))
    return '\n'.join(lines) + '\n'


def versus_table(diffs: Dict[str, dict], metric: str) -> str:
    """The paired differences to MSLoRA, with their intervals and words."""
    lines = [f'| mode | {metric}: mode − mslora | 95% interval | pairs | '
             'reading |', '|---|---|---|---|---|']
    for mode, d in diffs.items():
        interval = '–' if d['low'] is None else \
            f'[{d["low"]:+.3f}, {d["high"]:+.3f}]'
        lines.append(f'| {mode} | {d["mean"]:+.3f} | {interval} | {d["n"]} '
                     f'| {d["word"]} |')
    lines.append('\nPaired by seed, Student t; "ahead": the mode beats MSLoRA '
                 '(interval above 0), "behind": it does worse (below 0), '
                 '"not resolved": the interval holds 0 (or one pair).')
    return '\n'.join(lines) + '\n'


def selection_markdown(table: Dict[str, Dict[str, dict]],
                       chosen: Dict[str, float], metric: str) -> str:
    """The selection runs: ``metric`` (mean over selection seeds) for every
    mode × learning rate, the chosen one in bold."""
    lrs = sorted({c['lr'] for cells in table.values()
                  for c in cells.values()})
    lines = ['| mode | ' + ' | '.join(f'lr {lr:g}' for lr in lrs) + ' |',
             '|' + '---|' * (len(lrs) + 1)]
    for mode, cells in table.items():
        row = []
        for lr in lrs:
            cell = cells.get(f'{lr:g}')
            text = '' if cell is None else f'{cell["mean"]:.3f}'
            row.append(f'**{text}**' if cell and lr == chosen.get(mode)
                       else text)
        lines.append(f'| {mode} | ' + ' | '.join(row) + ' |')
    lines.append(f'\n{metric} on the held-out part, mean over the selection '
                 'seeds; bold: the chosen learning rate (best mean, a tie to '
                 'the smaller).')
    return '\n'.join(lines) + '\n'


def plot_selection(table: Dict[str, Dict[str, dict]], metric: str,
                   path: str) -> None:
    """The selection curves: held-out ``metric`` against the learning rate
    (log axis), a line per mode, saved to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, cells in table.items():
        points = sorted((c['lr'], c['mean']) for c in cells.values())
        ax.plot(*zip(*points), marker='o', label=mode)
    ax.set_xscale('log')
    _save(fig, ax, 'learning rate', f'{metric} (held-out part)', path)


def plot_curves(refined: Dict[str, Dict[str, dict]],
                variants: Dict[str, str], metric: str, path: str) -> None:
    """Each mode's held-out ``metric`` during training at its chosen lr, a
    line per variant that logged a curve (its seeds' mean; the chosen one
    solid, others dashed), against the loop's epochs (an epoch loop) or
    iterations, saved to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    unit = 'iteration'
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (mode, cells) in enumerate(refined.items()):
        for tag, cell in cells.items():
            if not cell['curves']:
                continue
            curve = cell['curves'][0]
            by_epoch = len({e for _, e, _ in curve}) == len(curve) and \
                curve[0][1] > 0
            unit = 'epoch' if by_epoch else 'iteration'
            xs = [p[1] if by_epoch else p[0] for p in curve]
            n = min(len(c) for c in cell['curves'])
            ys = [sum(c[j][2] for c in cell['curves']) / len(cell['curves'])
                  for j in range(n)]
            chosen = tag == variants.get(mode)
            words = Variant.parse(tag).words()
            ax.plot(xs[:n], ys, marker='o', markersize=3,
                    color=colours[i % len(colours)],
                    linestyle='-' if chosen else '--',
                    label=f'{mode} ({words})' + (' *' if chosen else ''))
    _save(fig, ax, unit, f'{metric} (held-out part)', path)


def plot_budget(summary: Dict[str, dict], metric: str, path: str) -> None:
    """The final ``metric`` (mean, std as error bars) against trainable
    backbone parameters (log axis; none trainable drawn at the left edge,
    marked 0), a point per mode, saved to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    counts = [s['backbone_trainable_params'] for s in summary.values()]
    zero = min([c for c in counts if c > 0] or [10]) / 10
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, s in summary.items():
        x = s['backbone_trainable_params'] or zero
        ax.errorbar([x], [s['mean'][metric]], yerr=[s['std'][metric]],
                    marker='o', capsize=3, linestyle='none',
                    label=mode if x != zero else f'{mode} (0)')
    ax.set_xscale('log')
    _save(fig, ax, 'trainable backbone parameters', metric, path)


def sweep_points(results: List[dict], xs: List[float], metric: str
                 ) -> Dict[str, List[tuple]]:
    """Per mode, ``(x, mean, std)`` of ``metric`` over a sweep: one
    comparison's ``results.json`` content per ``x``."""
    points: Dict[str, List[tuple]] = {}
    for x, result in zip(xs, results):
        for mode, s in result['summary'].items():
            if metric not in s['mean']:
                raise ValueError(f'{result["config"]}: no {metric!r}; it has '
                                 f'{sorted(s["mean"])}')
            points.setdefault(mode, []).append(
                (x, s['mean'][metric], s['std'][metric]))
    return points


def plot_sweep(points: Dict[str, List[tuple]], metric: str, xlabel: str,
               path: str) -> None:
    """``metric`` (mean, std as error bars) against the sweep's x on a log
    axis, a line per mode, saved to ``path``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, pts in points.items():
        x, mean, std = zip(*sorted(pts))
        ax.errorbar(x, mean, yerr=std, marker='o', capsize=3, label=mode)
    ax.set_xscale('log')
    _save(fig, ax, xlabel, metric, path)


def _save(fig, ax, xlabel: str, ylabel: str, path: str) -> None:
    """Label, grid and legend ``ax``; save ``fig`` to ``path`` and close
    it."""
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
