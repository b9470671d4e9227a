"""The model-quality benchmark's parts; ``benchmarks/model_quality.py`` runs them (see its docstring).
One module per job: the datasets and the reference figures (``config``), the RetailRocket sample's
train/test split for the unseen-dataset check (``unseen_split``), training and evaluating the GRU and
the baselines per dataset (``runner``), the scorer's hot-path timing (``scorer_timing``), the PNGs
(``charts``) and the markdown report (``report``).
"""
