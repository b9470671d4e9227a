"""Kairos model: data, training, evaluation, export and the incremental scorer."""
