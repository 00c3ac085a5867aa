"""Name -> class registries for adapters, metrics and data sets (lm-eval-harness style).

Adapters register with ``@register_adapter("name")``, metrics with ``@register_metric("name")``.
Modules under ``adapters/`` and ``bench/metrics/`` are imported lazily by :func:`load_all`.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

from bench.errors import BenchError

T = TypeVar("T")

ADAPTERS: dict[str, type] = {}
METRICS: dict[str, type] = {}
DATASETS: dict[str, type] = {}


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        if name in table and table[name] is not cls:
            raise BenchError(f"{kind} {name!r} is registered twice ({table[name]} and {cls})")
        table[name] = cls  # type: ignore[assignment]
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def register_adapter(name: str):
    """Class decorator: make an :class:`bench.adapter.Adapter` subclass available as ``name``.

    Refuses (:class:`BenchError`) a class declaring a capability whose contract it does not implement.
    """
    register = _register(ADAPTERS, "adapter", name)

    def deco(cls: T) -> T:
        from bench.adapter import check_capabilities

        check_capabilities(cls)  # type: ignore[arg-type]
        return register(cls)

    return deco


def register_metric(name: str):
    """Class decorator: make a :class:`bench.metrics.base.Metric` subclass available as ``name``."""
    return _register(METRICS, "metric", name)


def register_dataset(name: str):
    """Class decorator: make a data set loader available as ``name``."""
    return _register(DATASETS, "dataset", name)


_loaded = False


def load_all() -> None:
    """Import every module of ``adapters`` and ``bench.metrics`` / ``bench.data`` so they register."""
    global _loaded
    if _loaded:
        return
    for pkg_name in ("bench.data", "bench.metrics", "adapters"):
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{mod.name}")
    _loaded = True


def get(table: dict[str, type], kind: str, name: str) -> type:
    """Look ``name`` up in ``table``; raise :class:`BenchError` listing the known names otherwise."""
    load_all()
    if name not in table:
        raise BenchError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table)) or '(none)'}")
    return table[name]
