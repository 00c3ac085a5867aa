"""The resolved plan of a suite: one self-contained, JSON-serialisable :class:`CellSpec` per cell.

A suite file is read and checked once, here: :func:`load` collects every problem (YAML schema,
plugin imports, registries, adapter and metric params, budgets, capabilities, claims) and raises
one :class:`SuiteError` naming the file and each field path. :func:`resolve` then turns each
(method, seed) into a :class:`CellSpec`: adapter params, budget and metric params with their
defaults filled in, the data set, the seed and the *config hash*. Everything downstream (the
runner, ``bench run-cell`` on another machine, leaderboards, the gate) reads those specs.

A cell's identity is its config hash: a hash of everything that determines its numbers (harness
version, data set without its location, base model, adapter and resolved params, resolved budget,
resolved metric specs; not the seed, which is its own tag). Changing what is hashed invalidates
every finished run and the committed gate baselines.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bench import HARNESS_VERSION, registry
from bench.context import stable_hash
from bench.errors import BenchError, SuiteError
from bench.suite import DatasetSpec, MethodSpec, MetricSpec, Suite, _errors_to_lines, read_suite_file

CELL_SPEC_VERSION = "bench.cell/1"


# -- identity ----------------------------------------------------------------------------------
def cell_config(suite: Suite, method: MethodSpec) -> dict:
    """The resolved configuration of a method's cells (defaults filled in); hashed for identity."""
    cls = registry.get(registry.ADAPTERS, "adapter", method.adapter)
    params = cls.Params.model_validate(method.params).model_dump(mode="json")
    budget = {**suite.budget, **method.budget}
    budget_model = getattr(cls, "Budget", None)
    if budget_model is not None:
        budget = budget_model.model_validate(budget).model_dump(mode="json")
    metrics = []
    for spec in suite.metrics:
        mcls = registry.get(registry.METRICS, "metric", spec.name)
        metrics.append({"name": spec.name, "params": mcls.Params.model_validate(spec.params).model_dump(mode="json")})
    dataset = suite.dataset.model_dump(mode="json", exclude={"root"})  # where the data lies is not what it is
    return {
        "harness_version": HARNESS_VERSION,
        "dataset": dataset,
        "base_model": suite.base_model,
        "adapter": method.adapter,
        "params": params,
        "budget": budget,
        "metrics": metrics,
    }


def config_hash(suite: Suite, method: MethodSpec) -> str:
    return stable_hash(cell_config(suite, method))


# -- the unit of work --------------------------------------------------------------------------
class MetricCall(BaseModel):
    """One metric of a cell with its resolved params (defaults filled in)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any]


class CellSpec(BaseModel):
    """One (method, seed) cell of a suite, resolved: all a machine needs to run it, as JSON.

    Written by ``bench plan``, executed by ``bench run-cell`` and by ``bench run``
    (:func:`bench.runner.run_cell`). ``config_hash`` is checked against the contents on load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_version: Literal["bench.cell/1"] = CELL_SPEC_VERSION
    harness_version: str
    suite: str  # the suite's name = its MLflow experiment
    suite_file: str
    method: str
    label: str
    baseline: bool
    adapter: str
    params: dict[str, Any]  # the adapter's resolved Params
    budget: dict[str, Any]  # suite budget merged with the method's overrides, resolved
    metrics: tuple[MetricCall, ...]
    dataset: DatasetSpec
    base_model: dict[str, Any] | None = None
    plugins: tuple[str, ...] = ()  # modules to import before the adapter/metrics are looked up
    seed: int
    config_hash: str

    @property
    def filename(self) -> str:
        return f"{self.method}-s{self.seed}.json"

    def config(self) -> dict:
        """The hashed configuration (equal to :func:`cell_config` of the suite it came from)."""
        return {
            "harness_version": self.harness_version,
            "dataset": self.dataset.model_dump(mode="json", exclude={"root"}),
            "base_model": self.base_model,
            "adapter": self.adapter,
            "params": self.params,
            "budget": self.budget,
            "metrics": [{"name": m.name, "params": m.params} for m in self.metrics],
        }

    def method_spec(self) -> MethodSpec:
        return MethodSpec(name=self.method, adapter=self.adapter, label=self.label, baseline=self.baseline,
                          params=self.params)

    def suite_view(self) -> Suite:
        """A one-method, one-seed :class:`Suite` of this cell (what ``ctx.suite`` shows adapters and metrics)."""
        return Suite(name=self.suite, dataset=self.dataset, seeds=[self.seed], methods=[self.method_spec()],
                     budget=self.budget, metrics=[MetricSpec(name=m.name, params=m.params) for m in self.metrics],
                     base_model=self.base_model, plugins=list(self.plugins), source=self.suite_file)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "<cell spec>") -> "CellSpec":
        """Parse a spec written by :meth:`to_json`; :class:`BenchError` naming ``where`` and the field."""
        try:
            spec = cls.model_validate_json(text)
        except ValidationError as e:
            raise BenchError("\n".join(f"{where}: {line}" for line in _errors_to_lines(e))) from None
        actual = stable_hash(spec.config())
        if actual != spec.config_hash:
            raise BenchError(f"{where}: config_hash {spec.config_hash} does not match the spec's contents "
                             f"({actual}): the file was edited; write it again with `bench plan`")
        return spec

    @classmethod
    def read(cls, path: str | os.PathLike) -> "CellSpec":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise BenchError(f"{p}: cannot read the cell spec: {e.strerror or e}") from None
        return cls.from_json(text, str(p))


@dataclass(frozen=True)
class Plan:
    """A suite and the cells chosen from it, in run order (method by method, seed by seed)."""

    suite: Suite
    cells: tuple[CellSpec, ...]

    def write(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write one ``<method>-s<seed>.json`` per cell into ``out_dir``; return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for c in self.cells:
            p = out / c.filename
            p.write_text(c.to_json())
            paths.append(p)
        return paths


def cell_spec(suite: Suite, method: MethodSpec, seed: int) -> CellSpec:
    cfg = cell_config(suite, method)
    return CellSpec(
        harness_version=cfg["harness_version"], suite=suite.name, suite_file=suite.source, method=method.name,
        label=method.label or method.name, baseline=method.baseline, adapter=method.adapter, params=cfg["params"],
        budget=cfg["budget"], metrics=tuple(MetricCall(**m) for m in cfg["metrics"]), dataset=suite.dataset,
        base_model=suite.base_model, plugins=tuple(suite.plugins), seed=seed, config_hash=stable_hash(cfg),
    )


def resolve(suite: Suite | str | os.PathLike, methods: list[str] | None = None, seeds: list[int] | None = None,
            plugins: tuple[str, ...] | list[str] = ()) -> Plan:
    """Build the plan of ``suite`` (a parsed suite, a suite name or a file) for the chosen methods and seeds.

    Raises :class:`SuiteError` listing every problem of the suite, before any cell is built.
    """
    if isinstance(suite, Suite):
        s = suite
        if plugins:
            s.plugins = list(dict.fromkeys([*s.plugins, *plugins]))
        check(s)
    else:
        s = load(suite, plugins)
    chosen = [s.method(n) for n in methods] if methods else list(s.methods)
    seeds = list(seeds) if seeds else list(s.seeds)
    return Plan(s, tuple(cell_spec(s, m, seed) for m in chosen for seed in seeds))


# -- validation: every problem at once ---------------------------------------------------------
def load(suite: str | os.PathLike, plugins: tuple[str, ...] | list[str] = ()) -> Suite:
    """Read a suite file and check everything; raise one :class:`SuiteError` listing every problem.

    ``plugins`` (``--plugin``) and the suite's own ``plugins:`` are imported first. Schema errors
    of some fields do not hide the registry checks of the fields that parsed.
    """
    where, raw = read_suite_file(suite)
    cli = registry.import_plugins((f"--plugin {m}", m) for m in plugins)
    listed = raw.get("plugins")
    problems = []
    if isinstance(listed, list):
        problems += registry.import_plugins((f"plugins[{i}]", m) for i, m in enumerate(listed) if isinstance(m, str))
    plugins_ok = not (cli or problems)
    try:
        s: Suite | None = Suite.model_validate(raw)
    except ValidationError as e:
        s = None
        problems += _errors_to_lines(e)
    if plugins_ok:  # with a plugin missing, its adapters and metrics would all read as unknown
        problems += _registry_problems(*_parts(s, raw))
        if s is not None:
            problems += _claim_problems(s)
    if cli or problems:
        raise SuiteError("\n".join(cli + [f"{where}: {p}" for p in problems]))
    s.source = where
    s.plugins = list(dict.fromkeys([*s.plugins, *plugins]))
    return s


def check(s: Suite) -> None:
    """Check a parsed suite against the registries; raise :class:`SuiteError` listing all problems."""
    problems = registry.import_plugins((f"plugins[{i}]", m) for i, m in enumerate(s.plugins))
    if not problems:
        problems = _registry_problems(*_parts(s, {})) + _claim_problems(s)
    if problems:
        raise SuiteError("\n".join(f"{s.source}: {p}" for p in problems))


def _parts(s: Suite | None, raw: dict) -> tuple[list, list, dict | None, str | None]:
    """(index, MethodSpec) and (index, MetricSpec) pairs, budget and data-set name: of ``s`` or what parsed of ``raw``."""
    if s is not None:
        return list(enumerate(s.methods)), list(enumerate(s.metrics)), s.budget, s.dataset.name

    def each(key, model):
        out = []
        for i, x in enumerate(raw.get(key) if isinstance(raw.get(key), list) else []):
            try:
                out.append((i, model.model_validate(x)))
            except ValidationError:
                pass  # reported by the schema
        return out

    budget = raw.get("budget", {})
    ds = raw.get("dataset")
    name = ds.get("name") if isinstance(ds, dict) and isinstance(ds.get("name"), str) else None
    return each("methods", MethodSpec), each("metrics", MetricSpec), budget if isinstance(budget, dict) else None, name


def _param_problems(model, value: dict, loc: tuple) -> list[str]:
    """``model.model_validate(value)``'s errors as ``loc.field: message`` lines (empty when valid)."""
    try:
        model.model_validate(value)
        return []
    except ValidationError as e:
        return _errors_to_lines(e, loc)


def _registry_problems(methods: list, metrics: list, budget: dict | None, dataset: str | None) -> list[str]:
    registry.load_all()
    problems: list[str] = []
    for i, m in methods:
        cls = registry.ADAPTERS.get(m.adapter)
        if cls is None:
            problems.append(f"methods[{i}].adapter: unknown adapter {m.adapter!r}; known: {sorted(registry.ADAPTERS)}")
            continue
        problems += _param_problems(cls.Params, m.params, ("methods", i, "params"))
        budget_model = getattr(cls, "Budget", None)
        if budget_model is not None and budget is not None:
            try:
                budget_model.model_validate({**budget, **m.budget})
            except ValidationError as e:
                for line in _errors_to_lines(e):
                    key = line.split(":")[0]
                    src = f"methods[{i}].budget" if key in m.budget else "budget"
                    problems.append(f"{src}.{line}")
        for j, spec in metrics:
            mcls = registry.METRICS.get(spec.name)
            if mcls is None:
                continue
            missing = set(mcls.requires) - set(cls.capabilities)
            if missing:
                problems.append(
                    f"metrics[{j}]: metric {spec.name!r} needs capability {sorted(missing)} that adapter "
                    f"{m.adapter!r} (methods[{i}]) does not have (it has {sorted(cls.capabilities)})"
                )
    for j, spec in metrics:
        mcls = registry.METRICS.get(spec.name)
        if mcls is None:
            problems.append(f"metrics[{j}].name: unknown metric {spec.name!r}; known: {sorted(registry.METRICS)}")
            continue
        problems += _param_problems(mcls.Params, spec.params, ("metrics", j, "params"))
    if dataset is not None and dataset not in registry.DATASETS:
        problems.append(f"dataset.name: unknown data set {dataset!r}; known: {sorted(registry.DATASETS)}")
    return problems


def _claim_problems(s: Suite) -> list[str]:
    """Claims must name the suite's methods and metric keys (:func:`bench.claims.check_claims`)."""
    if not s.claims:
        return []
    from bench.claims import check_claims
    from bench.metrics.base import all_columns

    try:
        keys = list(all_columns(s)) + ["cell_seconds"]
    except (BenchError, ValidationError):
        return []  # a metric problem is reported by the registry checks
    return check_claims(s, keys)
