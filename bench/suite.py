"""Suite schema and loading: a suite is declarative YAML, validated by pydantic.

Every validation error names the file and the field path, e.g.
``suites/x.yaml: methods[1].params.k_max: must be >= k_min``, and is raised as
:class:`bench.errors.SuiteError` (the CLI prints it and exits 2, without a traceback).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import BenchError, SuiteError

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITES_DIR = REPO_ROOT / "suites"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """Which data, where, and how much of it. ``root`` overrides the data set's variable."""

    name: str
    root: str | None = None
    resolution: int | None = Field(default=None, gt=0)
    n_train: int | None = Field(default=None, gt=0, description="use the first n_train training images")
    n_test: int | None = Field(default=None, gt=0, description="use the first n_test test images")
    params: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    """One leaderboard row: an adapter with its parameters (and optional budget overrides)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    adapter: str
    label: str | None = None
    baseline: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)


class MetricSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class LeaderboardSpec(_Strict):
    sort_by: str | None = None
    columns: list[str] | None = None


class ClaimSpec(_Strict):
    """A paper claim checked on the leaderboard (evaluated by :mod:`bench.claims`)."""

    name: str
    paper: str
    assert_: str = Field(alias="assert")
    paper_numbers: dict[str, Any] = Field(default_factory=dict)
    test: Literal["welch", "bootstrap"] = "welch"
    level: float = Field(default=0.95, gt=0, lt=1)
    tol: float | None = None
    note: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("assert_")
    @classmethod
    def _assert_parses(cls, v: str) -> str:
        from bench.claims import validate_assertion  # the grammar lives with the evaluator

        return validate_assertion(v)


class ToleranceSpec(_Strict):
    """How much a gated metric may worsen vs the baseline before ``bench compare`` flags it.

    Paired (seed by seed, the gate's mode): ``noise_rel`` / ``noise_abs`` is the measured
    per-seed noise between machines (RMS of paired differences, as a fraction of the value or in
    metric units; usually filled in from the suite's ``gate.noise_file``), and the allowed
    worsening of the mean paired difference over n seeds is ``k * noise / sqrt(n)``.
    Floors: ``abs`` (metric units) and ``rel`` (fraction of |baseline value|); ``k_std``
    (multiples of the baseline's spread over seeds) is the unpaired rule for suites without a
    noise measurement. The allowance is the largest of those that apply.
    """

    abs: float | None = Field(default=None, ge=0)
    rel: float | None = Field(default=None, ge=0)
    k_std: float | None = Field(default=None, ge=0)
    noise_rel: float | None = Field(default=None, ge=0, description="paired per-seed noise, fraction of |value|")
    noise_abs: float | None = Field(default=None, ge=0, description="paired per-seed noise, metric units")
    scale: Literal["rel", "abs"] = Field(default="rel", description="which noise of the noise file applies: "
                                         "relative (losses, distances) or absolute (accuracies, positions)")
    k: float = Field(default=3.5, gt=0, description="allowance = k x noise / sqrt(seeds) on the mean paired Δ")
    two_sided: bool = Field(default=False, description="a move beyond the allowance in either direction fails "
                            "(descriptive metrics without a better direction, e.g. t_star)")


class GateSpec(_Strict):
    """Optional regression-gate settings (:mod:`bench.baseline`, :mod:`bench.compare`).

    Not part of any config hash: changing tolerances never invalidates runs.
    """

    tolerance: ToleranceSpec | None = Field(default=None, description="default for every gated metric")
    metrics: dict[str, ToleranceSpec] = Field(default_factory=dict, description="per-metric overrides")
    noise_file: str | None = Field(default=None, description="measured paired noise per metric "
                                   "(`bench gate-noise`), relative to the repository root")
    exclude: list[str] = Field(default_factory=list, description="metric keys not gated")


class Suite(_Strict):
    """A whole suite. Metric, adapter and budget keys are checked against the registries."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    dataset: DatasetSpec
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    budget: dict[str, Any] = Field(default_factory=dict)
    metrics: list[MetricSpec] = Field(min_length=1)
    leaderboard: LeaderboardSpec = Field(default_factory=LeaderboardSpec)
    claims: list[ClaimSpec] = Field(default_factory=list)
    base_model: dict[str, Any] | None = None
    gate: GateSpec | None = None
    plugins: list[str] = Field(default_factory=list, description="modules imported before validation: they "
                               "register external adapters and metrics (see also --plugin, entry points)")

    # Set by load_suite; not part of the YAML.
    source: str = Field(default="<memory>", exclude=True)

    @model_validator(mode="after")
    def _unique_and_one_baseline(self) -> "Suite":
        names = [m.name for m in self.methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"methods: duplicate method name(s) {dup}")
        if sum(m.baseline for m in self.methods) > 1:
            raise ValueError("methods: at most one method may have baseline: true")
        return self

    def baseline_method(self) -> MethodSpec | None:
        return next((m for m in self.methods if m.baseline), None)

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        raise BenchError(f"suite {self.name!r} has no method {name!r}; it has {[m.name for m in self.methods]}")


def format_loc(loc: tuple) -> str:
    """Pydantic error location -> ``methods[1].params.k_max``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _errors_to_lines(err: ValidationError, prefix: tuple = ()) -> list[str]:
    lines = []
    for e in err.errors():
        loc = format_loc(prefix + tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        lines.append(f"{loc}: {msg}")
    return lines


def resolve_suite_path(suite: str | os.PathLike) -> Path:
    """A suite name under ``suites/`` or a path to a YAML file -> the file's path."""
    p = Path(suite)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise SuiteError(f"{p}: no such suite file")
        return p
    cand = SUITES_DIR / f"{suite}.yaml"
    if not cand.exists():
        known = ", ".join(sorted(x.stem for x in SUITES_DIR.glob("*.yaml")))
        raise SuiteError(f"unknown suite {str(suite)!r}: no file {cand}; known suites: {known}")
    return cand


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_suite_file(suite: str | os.PathLike) -> tuple[str, dict]:
    """A suite name or file -> (its display path, its YAML mapping); :class:`SuiteError` otherwise."""
    path = resolve_suite_path(suite)
    where = _display(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SuiteError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a YAML mapping, got {type(raw).__name__}")
    return where, raw


def load_suite(suite: str | os.PathLike, check_registry: bool = True) -> Suite:
    """Load, parse and validate a suite.

    Raises :class:`SuiteError` naming the file and every offending field path.
    With ``check_registry`` the suite's plugins are imported and the adapters, their params and
    budgets, the metrics and their params, and the capabilities each metric needs are checked too,
    all problems together (:func:`bench.plan.load`).
    """
    if check_registry:
        from bench.plan import load  # the checks against the registries live with plan resolution

        return load(suite)
    where, raw = read_suite_file(suite)
    try:
        s = Suite.model_validate(raw)
    except ValidationError as e:
        raise SuiteError("\n".join(f"{where}: {line}" for line in _errors_to_lines(e))) from None
    s.source = where
    return s


def check_suite(s: Suite) -> None:
    """Check a parsed suite against the registries; raise :class:`SuiteError` listing all problems."""
    from bench.plan import check

    check(s)
