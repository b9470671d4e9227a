"""The benchmarks: scripts run from the repository root (``python benchmarks/X.py``; see README.md).
A package so that the scripts, their parts and the tests import them as ``benchmarks.…``, and mypy maps
each file to one module name.
"""
