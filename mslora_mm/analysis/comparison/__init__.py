"""The fair comparison of tuning modes on one config
(``tools/analysis/compare_tuning.py``): the modes (``tuning``), the protocol
(``protocol``), its runs (``runner``), their statistics (``stats``), the
course of a comparison (``campaign``), its report (``report``), the code
that made each run (``provenance``) and unrounded evaluators
(``unrounded``)."""
