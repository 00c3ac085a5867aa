"""Suite schema: a suite is declarative YAML, validated by these pydantic models.

Reading a file into a :class:`Suite` (YAML limits, error lines naming file and field) is
:mod:`bench.suite_file`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from bench.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITES_DIR = REPO_ROOT / "suites"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


INT64_MAX = 2**63 - 1
"""The largest integer a suite may hold (its seeds included)."""

NAME_MAX = 100
"""Longest suite or method name: names become file and directory names (``results/<suite>/``,
``<method>-s<seed>.json``), which must fit a file system's 255 bytes with room for what follows."""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_LIMIT_SUFFIX = re.compile(r"\.limit[1-9][0-9]*$")


def check_repo_path(v: str | None, what: str) -> str | None:
    """A ``.json`` file a suite names: relative to the repository root and inside it, or an absolute path.

    A relative path may not climb out with ``..`` (``../../etc/x.json`` is refused); an absolute path is an
    explicit location the suite's author chose (a shared baseline directory on a cluster) and is taken as given."""
    if v is None:
        return v
    p = Path(v)
    if ".." in p.parts or not v.strip() or "\x00" in v:
        raise ValueError(f"{what} {v!r}: give a path relative to the repository root and inside it (no ..), "
                         "or an absolute path")
    if p.suffix != ".json":
        raise ValueError(f"{what} {v!r}: must be a .json file")
    return v


def check_name(v: str, what: str = "name") -> str:
    """A suite or method name that is a plain file name: never a path, ``.``/``..``, or too long.

    Letters, digits and ``_ . + -``, starting with a letter or digit, at most :data:`NAME_MAX`
    characters (a ``.limit<N>`` suffix of ``bench run --limit`` comes on top)."""
    if not isinstance(v, str) or not _NAME_RE.match(v) or v in (".", ".."):
        raise ValueError(f"{what} {v!r} is not a plain name: use letters, digits and _ . + - only, starting with a "
                         "letter or digit (names become file and directory names under the results directory)")
    if len(_LIMIT_SUFFIX.sub("", v)) > NAME_MAX:
        raise ValueError(f"{what} is {len(v)} characters long; at most {NAME_MAX} (it becomes a file name)")
    return v


BASE_MODELS: dict[str, type[BaseModel]] = {}
"""``base_model.name`` -> the pydantic schema of that block (registered by the families that fine-tune)."""


def declare_base_model(name: str, schema: type[BaseModel]) -> None:
    """Register the schema of a suite's ``base_model`` block for ``name: <name>`` (checked by ``bench validate``)."""
    BASE_MODELS[name] = schema


class DatasetSpec(_Strict):
    """Which data, where, and how much of it. ``root`` overrides the data set's variable."""

    name: str
    root: str | None = None
    resolution: StrictInt | None = Field(default=None, gt=0)
    n_train: StrictInt | None = Field(default=None, gt=0, description="use the first n_train training images")
    n_test: StrictInt | None = Field(default=None, gt=0, description="use the first n_test test images")
    params: dict[str, Any] = Field(default_factory=dict)


class MethodSpec(_Strict):
    """One leaderboard row: an adapter with its parameters (and optional budget overrides)."""

    name: str
    adapter: str
    label: str | None = None
    baseline: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "method name")


class MetricSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class LeaderboardSpec(_Strict):
    sort_by: str | None = None
    columns: list[str] | None = None
    terminal: list[str] | None = Field(default=None, description="metric keys the terminal table shows first (then "
                                       "the rest by group while they fit the width); not part of any config hash")


class _Statement(_Strict):
    """What a premise and a claim share: an assertion in the claim grammar and how it is tested."""

    assert_: str = Field(alias="assert")
    test: Literal["welch", "permutation", "bootstrap"] = "welch"
    level: StrictFloat = Field(default=0.95, gt=0, lt=1)
    tol: StrictFloat | None = Field(default=None, ge=0, description="a tolerance: >= 0 (a negative margin "
                                    "is written into the assertion, not here)")
    note: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("assert_")
    @classmethod
    def _assert_parses(cls, v: str) -> str:
        from bench.claim_grammar import validate_assertion

        return validate_assertion(v)


class PremiseSpec(_Statement):
    """A condition under which a suite's claims are testable (evaluated like a claim, :mod:`bench.claims`).

    E.g. ``{name: baseline-has-sinks, assert: "sink_rate(llama_lr_lo) > 20"}``: the baseline shows the
    phenomenon, the reference beats what it is the reference for, the baseline is below a ceiling,
    training converged. A claim that ``needs:`` a premise is *untestable here* unless the premise is
    established (its test supports it); the board names the premise and its value.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)


class ClaimSpec(_Statement):
    """A paper claim checked on the leaderboard (evaluated by :mod:`bench.claims`)."""

    name: str
    paper: str
    paper_numbers: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] = Field(default_factory=list, description="names of the suite's premises that must be "
                             "established before this claim is decided (else: untestable here)")


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

    @field_validator("noise_file")
    @classmethod
    def _noise_file(cls, v: str | None) -> str | None:
        return check_repo_path(v, "noise_file")


class ExecutorSpec(_Strict):
    """Where the suite's cells run by default (``bench run --executor`` and its flags win; bench.executors)."""

    name: Literal["local", "ray", "slurm"] | None = Field(default=None, description="executor (default: local)")
    workers: StrictInt | None = Field(default=None, gt=0, le=1024, description="local: worker processes (more "
                                      "than the cores only with `bench run --allow-oversubscribe`)")
    address: str | None = Field(default=None, description="ray: cluster address (default: a local Ray)")
    cpus_per_cell: float | None = Field(default=None, gt=0, description="ray/slurm: CPUs per cell")
    gpus_per_cell: float | None = Field(default=None, ge=0, description="ray/slurm: GPUs per cell")
    partition: str | None = Field(default=None, description="slurm: partition")
    time_min: StrictInt | None = Field(default=None, gt=0, description="slurm: time limit per cell, minutes")


class Suite(_Strict):
    """A whole suite. Metric, adapter and budget keys are checked against the registries."""

    name: str
    description: str = ""
    dataset: DatasetSpec
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1,
                                   description="distinct integers in [0, 2^63-1] (not strings, not booleans)")
    methods: list[MethodSpec] = Field(min_length=1)
    budget: dict[str, Any] = Field(default_factory=dict)
    metrics: list[MetricSpec] = Field(min_length=1)
    leaderboard: LeaderboardSpec = Field(default_factory=LeaderboardSpec)
    claims: list[ClaimSpec] = Field(default_factory=list)
    premises: list[PremiseSpec] = Field(default_factory=list, description="conditions the claims' `needs:` name "
                                        "(bench.claims); not part of any config hash")
    seed_noise: str | None = Field(default=None, description="the suite's measured seed-noise model (`bench "
                                   "seed-noise`), relative to the repository root [default: "
                                   "results/baselines/<name>.seed_noise.json when it exists]; not hashed")
    base_model: dict[str, Any] | None = None
    precision: Literal["float32", "float64"] = Field(
        default="float32", description="torch's default float dtype for the cells' training and sampling "
        "(instruments keep their own, float32). float64 makes tiny-model training far less chaotic under "
        "float round-off, which is what the regression gate needs (docs/ci-gate.md); part of the config hash "
        "when not float32")
    gate: GateSpec | None = None
    executor: ExecutorSpec | None = None
    plugins: list[str] = Field(default_factory=list, description="modules imported before validation: they "
                               "register external adapters and metrics (see also --plugin, entry points)")

    # Set by load_suite; not part of the YAML.
    source: str = Field(default="<memory>", exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "suite name")

    @field_validator("seed_noise")
    @classmethod
    def _seed_noise(cls, v: str | None) -> str | None:
        return check_repo_path(v, "seed_noise")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if not 0 <= x <= INT64_MAX]
        if bad:
            raise ValueError(f"seeds must be integers in [0, 2^63-1], got {bad[:10]}" + (" ..." if len(bad) > 10 else ""))
        dup = _duplicates(v)
        if dup:
            raise ValueError(f"duplicate seed(s) {dup}: each seed is one cell")
        return v

    @model_validator(mode="after")
    def _unique_and_one_baseline(self) -> "Suite":
        names = [m.name for m in self.methods]
        dup = _duplicates(names)
        if dup:
            raise ValueError(f"methods: duplicate method name(s) {dup}")
        if sum(m.baseline for m in self.methods) > 1:
            raise ValueError("methods: at most one method may have baseline: true")
        pnames = [p.name for p in self.premises]
        dup = _duplicates(pnames)
        if dup:
            raise ValueError(f"premises: duplicate premise name(s) {dup}")
        for i, c in enumerate(self.claims):
            unknown = [n for n in c.needs if n not in pnames]
            if unknown:
                raise ValueError(f"claims[{i}].needs: unknown premise(s) {unknown}; the suite's premises: {pnames}")
        return self

    def baseline_method(self) -> MethodSpec | None:
        return next((m for m in self.methods if m.baseline), None)

    def method(self, name: str) -> MethodSpec:
        for m in self.methods:
            if m.name == name:
                return m
        raise BenchError(f"suite {self.name!r} has no method {name!r}; it has {[m.name for m in self.methods]}")


def _duplicates(values: list) -> list:
    """The values that occur more than once, sorted (linear time: suites may list many seeds)."""
    from collections import Counter

    return sorted(x for x, n in Counter(values).items() if n > 1)[:20]
