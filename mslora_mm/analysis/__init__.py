"""Measurements and experiments, by purpose: ``comparison`` (the fair
comparison of tuning modes: protocol, runs, statistics, report),
``cost`` (what training costs: the benchmark's modes, per-site costs,
memory, parameters) and ``gpu`` (the GPU check, with PyTorch alone)."""
