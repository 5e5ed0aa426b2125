"""Experiment pipelines: the offline demo and the paper's uniqueness grid (reproduce)."""
