"""The push-outcomes benchmark's parts; ``benchmarks/push_outcomes.py`` runs them (see its docstring).
One module per job: the run's setup (``config``), the model trained on the warm-up days (``training``),
the broker's pushes reader and producer (``broker_io``), the pushers under test (``arms``), running
them in lock step, one job per world and arm (``runner``), the outcome figures per arm and per world
(``outcome_figures``), the PNGs (``charts``) and the report's figures block (``report``).
"""
