"""Measured comparisons of the provider with its practical limits: ``python -m benchmarks.run``."""
