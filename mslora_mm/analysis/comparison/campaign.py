"""The course of a comparison (``compare_tuning.py``): the selection runs,
each mode's grid extended by the grid rule, the final runs at the chosen
learning rates, the train/test overlap check and the report; a plan
(``dry_run``) starts nothing and says which runs would start."""
import hashlib
import statistics
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from . import runner as cmp
from .protocol import choose_lr, grid_extension
from .provenance import code_version
from .report import write_report, write_selection
from .variants import Variant

#: the first selection seed (final seeds are 0..N-1)
SELECT_SEED0 = 1000


class RunBudgetSpent(Exception):
    """``--max-runs`` runs started: the comparison stops before the next."""


class Launcher:
    """Launches (a plan: looks up) the runs of one comparison: ``args`` of
    the tool (``max_runs``: start at most that many), ``command`` to run
    one, ``options`` of the runs."""

    def __init__(self, args, command: List[str], options: dict) -> None:
        self.args, self.command, self.options = args, command, options
        self.code = code_version()
        self.would_start: List[str] = []
        self.started: List[str] = []

    def _starting(self, name: str) -> None:
        budget = self.args.max_runs
        if budget is not None and len(self.started) >= budget:
            raise RunBudgetSpent(
                f'[compare_tuning] stopped before {name}: --max-runs '
                f'{budget} started ({", ".join(self.started) or "none"}); '
                'the same command resumes')
        self.started.append(name)

    def __call__(self, phase: str, mode: str, lr: float, seed: int,
                 variant: Variant = Variant()) -> Optional[dict]:
        options = self.options
        if phase == 'final':  # the selection's options never change one
            options = {k: v for k, v in options.items()
                       if k not in ('holdout_groups', 'curve_every')}
        cfg = cmp.run_config(self.args.config, self.args.cfg_options, phase,
                             mode, lr, seed, self.options, variant)
        result = cmp.launch(self.command, self.args.out, self.args.work_dir,
                            phase, mode, lr, seed,
                            cmp.signature(cfg, options), self.code,
                            self.args.rerun, self.args.rerun_stale,
                            self.args.dry_run, variant.tag, self._starting)
        if result is None:
            self.would_start.append(cmp.run_name(phase, mode, lr, seed,
                                                 variant.tag))
        return result


def select(run: Launcher, modes: List[str], grids: Dict[str, List[float]],
           seeds: List[int], extend: int, wanted: Optional[List[str]]
           ) -> Tuple[Dict[str, float], List[dict], Dict[str, List[float]]]:
    """The selection runs of ``modes`` on their ``grids`` (extended in place
    by the grid rule at most ``extend`` times); returns the chosen lr per
    mode whose runs are all known, the runs and the values added."""
    runs: Dict[str, Dict[float, List[Optional[dict]]]] = defaultdict(dict)
    for seed in seeds:
        for mode in modes:
            for lr in grids[mode]:
                runs[mode].setdefault(lr, []).append(run('select', mode, lr,
                                                         seed))
    added: Dict[str, List[float]] = {m: [] for m in modes}

    def known(mode: str) -> bool:
        return all(r is not None for rs in runs[mode].values() for r in rs)

    done = [r for m in modes for rs in runs[m].values() for r in rs if r]
    metric = cmp.choose_metrics(done, wanted)[0] if done else None
    for _ in range(extend):
        for mode in modes:
            if not known(mode):
                continue
            means = {lr: sum(r['metrics'][metric] for r in rs) / len(rs)
                     for lr, rs in runs[mode].items()}
            for lr in grid_extension(means):
                added[mode].append(lr)
                runs[mode][lr] = [run('select', mode, lr, seed)
                                  for seed in seeds]
            grids[mode] = sorted(runs[mode])
    chosen = {m: choose_lr({lr: [r['metrics'][metric] for r in rs]
                            for lr, rs in runs[m].items()})
              for m in modes if known(m)}
    flat = [r for seed_i in range(len(seeds)) for m in modes
            for lr in sorted(runs[m]) for r in [runs[m][lr][seed_i]] if r]
    return chosen, flat, {m: v for m, v in added.items() if v}


#: a refinement stage: a ``Variant`` field and, per mode, its values (the
#: first, the mode's value so far, wins a tie)
Stage = Tuple[str, Dict[str, Sequence]]


def refine(run: Launcher, modes: List[str], lrs: Dict[str, float],
           stages: List[Stage], seeds: List[int],
           wanted: Optional[List[str]]
           ) -> Tuple[Dict[str, Variant], List[dict]]:
    """After the lr: each mode at its lr in ``lrs``, one ``stages`` field at
    a time, runs each of the stage's values (the others as chosen so far)
    on the held-out part and keeps the best mean (a tie: the earlier value).
    Returns the chosen variant of each mode whose runs are all known, and
    the runs."""
    variants = {m: Variant() for m in modes if m in lrs}
    runs: List[dict] = []
    for field, values in stages:
        for mode in list(variants):
            if not values.get(mode):
                continue
            options = [variants[mode].replace(**{field: v})
                       for v in values[mode]]
            results = [[run('select', mode, lrs[mode], seed, v)
                        for seed in seeds] for v in options]
            runs += [r for rs in results for r in rs if r]
            if any(r is None for rs in results for r in rs):
                del variants[mode]  # a plan: later stages wait for it
                continue
            metric = cmp.choose_metrics(runs, wanted)[0]
            means = [statistics.mean(r['metrics'][metric] for r in rs)
                     for rs in results]
            variants[mode] = options[max(range(len(options)),
                                         key=lambda i: (means[i], -i))]
    return variants, runs


def _file_hashes(dataset) -> Dict[str, str]:
    from mslora_mm.datasets.holdout import innermost
    hashes = {}
    for leaf in innermost(dataset):
        leaf.full_init()
        for i in range(len(leaf)):
            path = leaf.get_data_info(i).get('img_path')
            if path and path not in hashes:
                with open(path, 'rb') as f:
                    hashes[path] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def shared_files(cfg) -> List[Tuple[str, str]]:
    """``(training file, test file)`` pairs of byte-identical images of a
    final run's config ``cfg`` (its training set and its test split, read
    as the val loader)."""
    from mmengine.registry import DATASETS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        train = _file_hashes(DATASETS.build(cfg.train_dataloader.dataset))
        test = _file_hashes(DATASETS.build(cfg.val_dataloader.dataset))
    by_hash = defaultdict(list)
    for path, digest in test.items():
        by_hash[digest].append(path)
    return sorted((path, other) for path, digest in train.items()
                  for other in by_hash.get(digest, ()))


def stages(args, options: dict, modes: List[str]) -> List[Stage]:
    """The refinement stages of the tool's ``args`` for ``modes``: schedule
    (``--schedule-grid``), weight decay (``--wd-grid``), BatchNorm
    statistics (``--bn-choice``: the config's, then the other)."""
    out: List[Stage] = []
    if args.schedule_grid:
        out.append(('schedule', {m: [1] + [f for f in args.schedule_grid
                                           if f != 1] for m in modes}))
    if args.wd_grid:
        out.append(('weight_decay', {m: [None] + list(args.wd_grid)
                                     for m in modes}))
    if args.bn_choice:
        out.append(('norm_eval', {
            m: [None, not cmp.config_norm_eval(args.config, args.cfg_options,
                                               m, options)]
            for m in modes if m in args.bn_choice}))
    return out


def _unique(runs: List[dict]) -> List[dict]:
    seen = {(r['mode'], r['lr'], r.get('variant', ''), r['seed']): r
            for r in runs}
    return list(seen.values())


def compare(args, argv: List[str], command: List[str], options: dict
            ) -> Optional[str]:
    """The whole comparison of the tool's ``args``; returns the report's
    markdown (None for a plan, which prints the runs it would start)."""
    run = Launcher(args, command, options)
    config_lr = cmp.config_lr(args.config, args.cfg_options)
    grids = {m: g or [config_lr] for m, g in args.grids.items()}
    first_grids = {m: list(g) for m, g in grids.items()}
    select_seeds = list(range(SELECT_SEED0, SELECT_SEED0 + args.select_seeds))
    refining = args.holdout is not None and bool(
        args.schedule_grid or args.wd_grid or args.bn_choice)
    selecting = [m for m in args.modes
                 if len(grids[m]) > 1 or args.select_only or refining]
    picked, selection_runs, added = select(
        run, selecting, grids, select_seeds, args.extend_grid, args.metrics)
    steps = stages(args, options, selecting) if refining else []
    variants, refined = refine(run, selecting, picked, steps, select_seeds,
                               args.metrics)
    selection_runs = _unique(selection_runs + refined)
    chosen = {m: picked[m] if m in selecting else grids[m][0]
              for m in args.modes
              if m in variants or m not in selecting}
    variant = {m: variants.get(m, Variant()) for m in chosen}
    if selection_runs:
        print('[compare_tuning] chosen on the held-out part: ' + ', '.join(
            f'{m} lr {lr:g} ({variant[m].words()})'
            for m, lr in chosen.items()), flush=True)
    if args.select_only:
        if args.dry_run:
            return _plan(run)
        return write_selection(args.out, args.config, argv, args.metrics,
                               chosen, selection_runs, run.code,
                               {m: v.tag for m, v in variant.items()})
    final_runs = [run('final', mode, chosen[mode], seed, variant[mode])
                  for seed in range(args.seeds) for mode in args.modes
                  if mode in chosen]
    for mode in args.modes:
        if mode not in chosen:  # a plan: its selection is not done
            run.would_start += [f'final/{mode}/(setting after its selection)'
                                f'_seed{seed}' for seed in range(args.seeds)]
    if args.dry_run:
        return _plan(run)
    shared = shared_files(cmp.run_config(args.config, args.cfg_options,
                                         'final', args.modes[0],
                                         chosen[args.modes[0]], 0, options))
    for train, test in shared:
        print(f'[compare_tuning] WARNING: training image {train} and test '
              f'image {test} are byte-identical', flush=True)
    protocol = dict(holdout=args.holdout, holdout_seed=args.holdout_seed,
                    holdout_groups=args.holdout_groups, grids=grids,
                    first_grids=first_grids, extend_grid=args.extend_grid,
                    extended=added, chosen=chosen,
                    variants={m: v.tag for m, v in variant.items()},
                    stages=[dict(field=f, values=v) for f, v in steps],
                    curve_every=options.get('curve_every'),
                    select_seeds=select_seeds if selection_runs else [],
                    final_seeds=list(range(args.seeds)),
                    mona_rank=options['mona_rank'],
                    lora_rank=args.lora_rank,
                    train_test_shared=[list(p) for p in shared])
    held = cmp.mode_conditions(args.config, args.cfg_options, chosen,
                               options, variant)
    return write_report(args.out, args.config, argv, args.modes,
                        args.metrics, protocol, held, selection_runs,
                        final_runs, run.code)


def _plan(run: Launcher) -> str:
    lines = [f'[compare_tuning] plan: {len(run.would_start)} run(s) would '
             'start'] + [f'  {name}' for name in run.would_start]
    return '\n'.join(lines)

