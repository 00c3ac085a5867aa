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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench import HARNESS_VERSION, registry
from bench.context import stable_hash
from bench.errors import BenchError, SuiteError
from bench.limit import limit_of, limited
from bench.suite import DatasetSpec, MethodSpec, MetricSpec, Suite
from bench.suite_file import _errors_to_lines

CELL_SPEC_VERSION = "bench.cell/1"


def _meta(kind: str, name: str):
    cls = registry.meta(kind, name)
    if cls is None:
        raise BenchError(f"unknown {kind} {name!r}; known: {', '.join(registry.known(kind)) or '(none)'}")
    return cls


# -- identity ----------------------------------------------------------------------------------
def cell_config(suite: Suite, method: MethodSpec) -> dict:
    """The resolved configuration of a method's cells (defaults filled in); hashed for identity."""
    cls = _meta("adapter", method.adapter)  # declarations only: resolving a plan imports no torch
    params = cls.Params.model_validate(method.params).model_dump(mode="json")
    budget = {**suite.budget, **method.budget}
    budget_model = getattr(cls, "Budget", None)
    if budget_model is not None:
        budget = budget_model.model_validate(budget).model_dump(mode="json")
    metrics = []
    for spec in suite.metrics:
        mcls = _meta("metric", spec.name)
        metrics.append({"name": spec.name, "params": mcls.Params.model_validate(spec.params).model_dump(mode="json")})
    dataset = suite.dataset.model_dump(mode="json", exclude={"root"})  # where the data lies is not what it is
    return _config(HARNESS_VERSION, dataset, suite.base_model, method.adapter, params, budget, metrics,
                   suite.precision, limit_of(suite.name))


def _config(harness_version, dataset, base_model, adapter, params, budget, metrics, precision, limit=None) -> dict:
    cfg = {
        "harness_version": harness_version,
        "dataset": dataset,
        "base_model": base_model,
        "adapter": adapter,
        "params": params,
        "budget": budget,
        "metrics": metrics,
    }
    if precision != "float32":  # the default is not hashed: float32 cells keep their identities
        cfg["precision"] = precision
    if limit is not None:  # `bench run --limit N` (bench.limit): never the identity of a full cell
        cfg["limit"] = limit
    return cfg


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
    precision: Literal["float32", "float64"] = "float32"  # torch's default float dtype in the cell
    seed: int = Field(ge=0, le=2**63 - 1)
    config_hash: str
    spec_hash: str | None = None  # every field but the two hashes (the seed, label, suite ...): an edit is refused

    def contents_hash(self) -> str:
        """Hash of everything in the spec except ``config_hash`` and ``spec_hash`` (what ``spec_hash`` records)."""
        return stable_hash(self.model_dump(mode="json", exclude={"config_hash", "spec_hash"}))

    @property
    def filename(self) -> str:
        return f"{self.method}-s{self.seed}.json"

    def config(self) -> dict:
        """The hashed configuration (equal to :func:`cell_config` of the suite it came from)."""
        return _config(self.harness_version, self.dataset.model_dump(mode="json", exclude={"root"}),
                       self.base_model, self.adapter, self.params, self.budget,
                       [{"name": m.name, "params": m.params} for m in self.metrics], self.precision,
                       limit_of(self.suite))

    def method_spec(self) -> MethodSpec:
        return MethodSpec(name=self.method, adapter=self.adapter, label=self.label, baseline=self.baseline,
                          params=self.params)

    def suite_view(self) -> Suite:
        """A one-method, one-seed :class:`Suite` of this cell (what ``ctx.suite`` shows adapters and metrics)."""
        return Suite(name=self.suite, dataset=self.dataset, seeds=[self.seed], methods=[self.method_spec()],
                     budget=self.budget, metrics=[MetricSpec(name=m.name, params=m.params) for m in self.metrics],
                     base_model=self.base_model, plugins=list(self.plugins), precision=self.precision,
                     source=self.suite_file)

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
        if spec.spec_hash is not None and spec.spec_hash != spec.contents_hash():
            raise BenchError(f"{where}: spec_hash {spec.spec_hash} does not match the spec's contents (seed, method, "
                             "suite ...): the file was edited; write it again with `bench plan`")
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
    spec = CellSpec(
        harness_version=cfg["harness_version"], suite=suite.name, suite_file=suite.source, method=method.name,
        label=method.label or method.name, baseline=method.baseline, adapter=method.adapter, params=cfg["params"],
        budget=cfg["budget"], metrics=tuple(MetricCall(**m) for m in cfg["metrics"]), dataset=suite.dataset,
        base_model=suite.base_model, plugins=tuple(suite.plugins), precision=suite.precision, seed=seed,
        config_hash=stable_hash(cfg),
    )
    return spec.model_copy(update={"spec_hash": spec.contents_hash()})


def resolve(suite: Suite | str | os.PathLike, methods: list[str] | None = None, seeds: list[int] | None = None,
            plugins: tuple[str, ...] | list[str] = (), limit: int | None = None) -> Plan:
    """Build the plan of ``suite`` (a parsed suite, a suite name or a file) for the chosen methods and seeds.

    ``limit``: every count capped at N (:func:`bench.limit.limited`; the plan's suite is
    ``<name>.limit<N>``). Raises :class:`SuiteError` listing every problem of the suite, before any
    cell is built.
    """
    if isinstance(suite, Suite):
        s = suite
        if plugins:
            s.plugins = list(dict.fromkeys([*s.plugins, *plugins]))
        check(s)
    else:
        s = load(suite, plugins)
    if limit is not None:
        s = limited(s, limit)
        try:
            check(s)  # the capped counts against the adapters' and metrics' own checks
        except SuiteError as e:
            raise SuiteError(f"--limit {limit}: the capped counts fail these checks (a larger N may pass):\n{e}") from None
    chosen = [s.method(n) for n in methods] if methods else list(s.methods)
    seeds = list(seeds) if seeds else list(s.seeds)
    bad = [x for x in seeds if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2**63]
    if bad or len(set(seeds)) != len(seeds):
        raise SuiteError(f"{s.source}: seeds (--seed/--seeds): {seeds} must be distinct integers in [0, 2^63-1]"
                         + (f" (bad: {bad})" if bad else ""))
    return Plan(s, tuple(cell_spec(s, m, seed) for m in chosen for seed in seeds))


from bench.plan_checks import check, load, plan_problems  # noqa: E402,F401  (validation, re-exported)
