"""Benchmark and leaderboard harness for generative-model research.

The harness runs declarative suites (``suites/*.yaml``): each suite names a data set,
methods (adapters from ``adapters/``), budgets, seeds, metrics and claims. Every
(method, seed) cell is logged to MLflow, and leaderboards are built from MLflow only.
"""

# Bump when a change to the harness invalidates cached weights or finished runs.
HARNESS_VERSION = "1"
