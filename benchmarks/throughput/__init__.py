"""The stream worker benchmark's parts; ``benchmarks/stream_throughput.py`` runs them (see its docstring).
One module per job: the fixed settings (``config``), the events and the model (``workload``), phase A's
throughput and parse ceiling (``throughput_phase``), phases B and C's event→push latency against the
broker floor (``latency_phase``), the py-spy and in-process engine profiles (``profiles``), the PNGs
(``charts``) and the markdown report (``report``).
"""
