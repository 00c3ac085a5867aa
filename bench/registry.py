"""Name -> class registries for adapters, metrics and data sets (lm-eval-harness style).

Adapters register with ``@register_adapter("name")``, metrics with ``@register_metric("name")``.
Modules under ``adapters/`` (recursively: one subpackage per method family) and ``bench/metrics/``
are imported lazily by :func:`load_all`, and so
are external packages' modules: entry points of the groups ``genbench.adapters`` /
``genbench.metrics``, a suite's ``plugins:`` and ``--plugin`` (:func:`import_plugins`).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from typing import Callable, Iterable, TypeVar

from bench.errors import BenchError

T = TypeVar("T")

ENTRY_POINT_GROUPS = ("genbench.adapters", "genbench.metrics")
"""Entry-point groups whose modules are imported by :func:`load_all` (value: a module, or module:object)."""

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


def _import_tree(pkg_name: str) -> None:
    """Import ``pkg_name`` and, recursively, every module and subpackage under it.

    Skips any module or package whose name starts with ``_`` (and everything under such a package)
    and folders without ``__init__.py`` (data folders such as ``adapters/peft/lm_eval_tasks/``).
    Shared non-adapter modules of a family (``adapters.peft.train``, ``adapters.tokenizers.ar_prior``
    ...) are imported too; they register nothing, so that is harmless.
    """
    pkg = importlib.import_module(pkg_name)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("_"):
            continue
        name = f"{pkg_name}.{mod.name}"
        if mod.ispkg:
            _import_tree(name)
        else:
            importlib.import_module(name)


def load_all() -> None:
    """Import every module of ``bench.metrics`` / ``bench.data`` and, recursively, of the ``adapters``
    family subpackages (``adapters.tokenizers``, ``adapters.peft``, ...), then the entry points."""
    global _loaded
    if _loaded:
        return
    for pkg_name in ("bench.data", "bench.metrics"):
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{mod.name}")
    _import_tree("adapters")
    for group in ENTRY_POINT_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            try:
                ep.load()
            except Exception as e:  # noqa: BLE001 - any import failure of a plugin is the user's to fix
                dist = getattr(ep.dist, "name", None) or "?"
                raise BenchError(f"entry point {ep.name!r} = {ep.value!r} (group {group}, package {dist}) "
                                 f"cannot be loaded: {type(e).__name__}: {e}") from None
    _loaded = True


def import_plugins(modules: Iterable[tuple[str, str]]) -> list[str]:
    """Import plugin modules (they register adapters/metrics when imported); return the problems.

    ``modules`` holds (where, module name) pairs; each problem reads ``<where>: cannot import ...``.
    """
    load_all()
    problems = []
    for where, name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported with where it was asked for
            problems.append(f"{where}: cannot import plugin module {name!r} ({type(e).__name__}: {e}); "
                            "is its package installed or on PYTHONPATH?")
    return problems


def get(table: dict[str, type], kind: str, name: str) -> type:
    """Look ``name`` up in ``table``; raise :class:`BenchError` listing the known names otherwise."""
    load_all()
    if name not in table:
        raise BenchError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table)) or '(none)'}")
    return table[name]
