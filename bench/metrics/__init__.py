"""Metrics, one module each; each registers with :func:`bench.registry.register_metric`."""
