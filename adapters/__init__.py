"""Method adapters, one module per method; each registers with :func:`bench.registry.register_adapter`."""
