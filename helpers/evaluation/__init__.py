"""Evaluation: generation, metrics, the comparison, its cache, plots and the judge."""
