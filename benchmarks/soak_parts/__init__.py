"""The soak benchmark's parts; ``benchmarks/soak.py`` runs them (see its docstring). One module per
job: the settings and verdict thresholds (``config``), the shop whose shoppers come and go
(``workload``), reading the changelog (``changelog``), the run and its samples (``runner``), the
trends and verdicts (``analysis``), the PNGs (``charts``) and the markdown report (``report``).
"""
