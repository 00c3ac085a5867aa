"""Name -> class registries for adapters, metrics and data sets (lm-eval-harness style).

Adapters register with ``@register_adapter("name")``, metrics with ``@register_metric("name")``.
Modules under ``adapters/`` (recursively: one subpackage per method family) and ``bench/metrics/``
are imported lazily by :func:`load_all`, and so
are external packages' modules: entry points of the groups ``genbench.adapters`` /
``genbench.metrics``, a suite's ``plugins:`` and ``--plugin`` (:func:`import_plugins`).

Checking a suite (``bench validate``, the first step of ``bench run``) needs only what a name
declares (an adapter's ``Params``, ``Budget`` and capabilities; a metric's ``Params``,
``requires``, ``columns`` and ``inputs``; a data set's params and split sizes), not torch. So each
package may hold a light module ``params`` (``bench/metrics/params.py``, ``bench/data/params.py``,
``adapters/<family>/params.py``) that imports no torch and either imports the package's light
modules (metrics, data sets) or declares its adapters (:func:`declare_adapter`: name, Params,
Budget, capabilities and where the implementation lives). :func:`load_light` imports only those;
:func:`meta` looks a name up there first and falls back to :func:`load_all` for a name not
declared (a new module that has no light declaration is found, only slower). ``register_adapter``
refuses an implementation whose Params/Budget/capabilities differ from its declaration.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from bench.errors import BenchError

T = TypeVar("T")

ENTRY_POINT_GROUPS = ("genbench.adapters", "genbench.metrics")
"""Entry-point groups whose modules are imported by :func:`load_all` (value: a module, or module:object)."""

class _Table(dict):
    """A name -> class table; ``table[name]`` of a name not registered yet imports every module
    first (:func:`load_all`), so code written before light declarations keeps working."""

    def __missing__(self, name: str) -> type:
        if not _loaded:
            load_all()
            if dict.__contains__(self, name):
                return dict.__getitem__(self, name)
        raise KeyError(name)


ADAPTERS: dict[str, type] = _Table()
METRICS: dict[str, type] = _Table()
DATASETS: dict[str, type] = _Table()


@dataclass(frozen=True)
class AdapterMeta:
    """What checking a suite needs of an adapter, declared without importing its implementation."""

    registry_name: str
    impl: str  # "module:Class" of the registered implementation
    Params: type
    Budget: type | None
    capabilities: frozenset[str]
    validate_environment: Callable[[Any, Any], None] | None = None
    """Light form of the class's opt-in ``bench validate`` hook (same contract), None if it has none."""
    data_problems: Callable[[Any], list[str]] | None = None
    """Light form of the class's fail-fast data hook ``data_problems(dataset_spec) -> [problem]`` read by
    :mod:`bench.plan_checks` (same contract), None if it has none."""


ADAPTER_META: dict[str, AdapterMeta] = {}


def declare_adapter(name: str, impl: str, params: type, capabilities: Iterable[str],
                    budget: type | None = None,
                    validate_environment: Callable[[Any, Any], None] | None = None, *,
                    data_problems: Callable[[Any], list[str]] | None = None) -> AdapterMeta:
    """Declare adapter ``name`` for validation (in a light ``params`` module); ``impl`` = "module:Class".

    The class registered later under ``name`` must have exactly these ``Params``, ``Budget`` and
    ``capabilities`` (:class:`BenchError` otherwise); a ``validate_environment`` hook exactly when
    the declaration gives one (``validate_environment(suite, method)``, importing no torch; the
    class's hook should call the same function); and a ``data_problems`` hook exactly when the
    declaration gives one (``data_problems(dataset_spec) -> list[str]``, importing no torch; the
    class's attribute should be the same function).
    """
    m = AdapterMeta(name, impl, params, budget, frozenset(capabilities), validate_environment,
                    data_problems=data_problems)
    old = ADAPTER_META.get(name)
    if old is not None and old != m:
        raise BenchError(f"adapter {name!r} is declared twice ({old.impl} and {impl})")
    ADAPTER_META[name] = m
    return m


def _check_declared(name: str, cls: type) -> None:
    m = ADAPTER_META.get(name)
    if m is None:
        return
    got = (getattr(cls, "Params", None), getattr(cls, "Budget", None), frozenset(getattr(cls, "capabilities", ())))
    if got != (m.Params, m.Budget, m.capabilities):
        raise BenchError(f"adapter {name!r}: {cls.__module__}.{cls.__name__} has Params/Budget/capabilities "
                         f"{got}, but its declaration (for validation) says {(m.Params, m.Budget, m.capabilities)}; "
                         "make them the same objects")
    if (getattr(cls, "data_problems", None) is None) != (m.data_problems is None):
        raise BenchError(f"adapter {name!r}: {cls.__module__}.{cls.__name__} and its declaration (for validation) "
                         "disagree on a data_problems hook; declare_adapter(..., data_problems=...) the light "
                         "function the class's hook is")
    if (getattr(cls, "validate_environment", None) is None) != (m.validate_environment is None):
        raise BenchError(f"adapter {name!r}: {cls.__module__}.{cls.__name__} and its declaration (for validation) "
                         "disagree on a validate_environment hook; declare_adapter(..., validate_environment=...) "
                         "the light function the class's hook calls")


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
        _check_declared(name, cls)  # type: ignore[arg-type]
        return register(cls)

    return deco


def register_metric(name: str):
    """Class decorator: make a :class:`bench.metrics.base.Metric` subclass available as ``name``."""
    return _register(METRICS, "metric", name)


def register_dataset(name: str):
    """Class decorator: make a data set loader available as ``name``."""
    return _register(DATASETS, "dataset", name)


_loaded = False
_light_loaded = False
LIGHT_MODULE = "params"
"""Name of each package's light module (imports no torch), see the module docstring."""


def _import_light(pkg_name: str) -> None:
    """Import ``<pkg>.params`` of ``pkg_name`` and of its subpackages (recursively), where present."""
    pkg = importlib.import_module(pkg_name)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("_"):
            continue
        if mod.ispkg:
            _import_light(f"{pkg_name}.{mod.name}")
        elif mod.name == LIGHT_MODULE:
            importlib.import_module(f"{pkg_name}.{mod.name}")


def load_light() -> None:
    """Import the light declarations of the harness's packages (no torch); entry points come with
    :func:`load_all` (a name that only a plugin provides is found by :func:`meta`'s fallback)."""
    global _light_loaded
    if _light_loaded or _loaded:
        return
    for pkg_name in ("bench.data", "bench.metrics", "adapters"):
        _import_light(pkg_name)
    _light_loaded = True


def meta(kind: str, name: str) -> Any:
    """The class (or :class:`AdapterMeta`) that declares ``name`` of ``kind`` (adapter | metric | dataset).

    Light declarations first; for a name none of them declares, every module is imported
    (:func:`load_all`) and looked in. None if ``name`` is unknown. What it returns has the
    attributes validation reads: adapters ``Params``, ``Budget``, ``capabilities`` (and
    ``validate_environment``, None or absent when there is no such hook); metrics
    ``Params``, ``requires``, ``columns``, ``inputs``; data sets ``Params``, ``resolutions``,
    ``split_sizes``, ``has_adm_reference`` (the last three optional).
    """
    table = {"adapter": ADAPTERS, "metric": METRICS, "dataset": DATASETS}[kind]
    load_light()
    if name in table:
        return table[name]
    if kind == "adapter" and name in ADAPTER_META:
        return ADAPTER_META[name]
    if not _loaded:
        load_entry_points()  # a plugin's light declaration, before importing every module
        if name in table:
            return table[name]
        if kind == "adapter" and name in ADAPTER_META:
            return ADAPTER_META[name]
    load_all()
    return table.get(name)


def known(kind: str) -> list[str]:
    """Every name of ``kind`` (imports every module: used for "unknown ...; known: ..." messages)."""
    load_all()
    return sorted({"adapter": ADAPTERS, "metric": METRICS, "dataset": DATASETS}[kind])


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
    load_entry_points()
    _loaded = True


def load_entry_points() -> None:
    """Import the modules of the ``genbench.*`` entry points (a plugin's light ``params`` module as the
    entry point keeps ``bench validate`` free of torch; its implementation is imported by name)."""
    for group in ENTRY_POINT_GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            try:
                ep.load()
            except Exception as e:  # noqa: BLE001 - any import failure of a plugin is the user's to fix
                dist = getattr(ep.dist, "name", None) or "?"
                raise BenchError(f"entry point {ep.name!r} = {ep.value!r} (group {group}, package {dist}) "
                                 f"cannot be loaded: {type(e).__name__}: {e}") from None


def import_plugins(modules: Iterable[tuple[str, str]]) -> list[str]:
    """Import plugin modules (they register adapters/metrics when imported); return the problems.

    ``modules`` holds (where, module name) pairs; each problem reads ``<where>: cannot import ...``.
    Only the light declarations are imported first (:func:`load_light`); lookups of other names
    import the rest (:func:`meta`).
    """
    load_light()
    problems = []
    for where, name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported with where it was asked for
            problems.append(f"{where}: cannot import plugin module {name!r} ({type(e).__name__}: {e}); "
                            "is its package installed or on PYTHONPATH?")
    return problems


def provider_hint(kind: str, name: str) -> str:
    """Where an unknown ``name`` could come from: an installed entry point of that name (which did
    not register it), else how a plugin is passed (``--plugin``, ``plugins:``, an entry point)."""
    group = "genbench.adapters" if kind == "adapter" else "genbench.metrics"
    eps = [ep for g in ENTRY_POINT_GROUPS for ep in importlib.metadata.entry_points(group=g) if ep.name == name]
    if eps:
        ep = eps[0]
        return (f"the entry point {ep.name!r} = {ep.value!r} (package {getattr(ep.dist, 'name', '?')}) is installed "
                f"but does not register {kind} {name!r}")
    return (f"if a plugin provides it, pass --plugin MODULE, list it under the suite's plugins:, or install "
            f"its package (an entry point in group {group})")


def get(table: dict[str, type], kind: str, name: str) -> type:
    """Look ``name`` up in ``table``; raise :class:`BenchError` listing the known names otherwise.

    Imports only what the name needs: the light declarations, then a declared adapter's own module
    (``impl``); every module (:func:`load_all`) only for a name none of them registers. A run of
    the fmnist suite so imports the tokenizer family, not transformers' PEFT stack or lm-eval
    (measured here: 20 s less per process, three processes per `make bench`).
    """
    load_light()
    if name not in table and kind == "adapter" and name in ADAPTER_META:
        importlib.import_module(ADAPTER_META[name].impl.split(":")[0])
    if name not in table:
        load_all()
    if name not in table:
        raise BenchError(f"unknown {kind} {name!r} ({provider_hint(kind, name)}); "
                         f"known: {', '.join(sorted(table)) or '(none)'}")
    return table[name]
