"""The cold-items benchmark's parts; ``benchmarks/cold_items.py`` runs them (see its docstring). One
module per job: the fixed settings and the case type (``config``), the two datasets' events and
catalogs and the simulated shop's cold hold-out (``datasets``), ranks and their summaries
(``metrics``), training, adding the unknown items and ranking the test stream (``runner``), the
readings in words computed from the figures (``reading``) and the markdown report (``report``).
"""
