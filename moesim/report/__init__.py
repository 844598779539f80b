"""Summaries and plots of metrics, runs and sweeps (matplotlib is imported inside functions)."""
