"""Suite schema and loading: a suite is declarative YAML, validated by pydantic.

Every validation error names the file and the field path, e.g.
``suites/x.yaml: methods[1].params.k_max: must be >= k_min``, and is raised as
:class:`bench.errors.SuiteError` (the CLI prints it and exits 2, without a traceback).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator, model_validator

from bench.errors import BenchError, SuiteError

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITES_DIR = REPO_ROOT / "suites"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


def format_loc(loc: tuple) -> str:
    """Pydantic error location -> ``methods[1].params.k_max``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


COERCION_ERRORS = ("int_type", "float_type", "bool_type")
"""Strict-mode error types of a string or boolean given for a number (or a string for a boolean)."""


def _errors_to_lines(err: ValidationError, prefix: tuple = ()) -> list[str]:
    lines = []
    for e in err.errors():
        loc = format_loc(prefix + tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"] in COERCION_ERRORS and isinstance(e.get("input"), (str, bool)):
            got, want = e["input"], {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false"}
            msg += (f" (got the string {got!r}: write {want[e['type']]} without quotes)" if isinstance(got, str)
                    else f" (got the boolean {got!r}: write {want[e['type']]})")
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


MAX_SUITE_BYTES = 1 << 20
"""A suite file larger than this (1 MiB) is refused: suites are a few kilobytes."""
MAX_ALIASES = 32
"""YAML aliases (``*name``) allowed in a suite; more is refused (a "billion laughs" file expands
exponentially), before anything is expanded."""
MAX_NODES = 100_000
"""Scalars, sequences and mappings a suite may hold after alias expansion."""
INT64_MAX = 2**63 - 1


class _SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and caps aliases and expanded size."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}): a suite "
                                     "needs none; write the values out")
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.YAMLError(f"the YAML expands to more than {MAX_NODES} values (aliases of aliases?)")
        return super().construct_object(node, deep)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping reports it
            if first is not None:
                raise yaml.YAMLError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at "
                                     f"line {first}): keep one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_SuiteLoader.add_constructor("tag:yaml.org,2002:map", _SuiteLoader.construct_yaml_map)


def _too_big(raw: Any, loc: tuple = ()) -> list[str]:
    """Field paths of integers beyond int64 and non-finite floats anywhere in ``raw``."""
    out = []
    if isinstance(raw, dict):
        for k, v in raw.items():
            out += _too_big(v, loc + (str(k),))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            out += _too_big(v, loc + (i,))
    elif isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) > INT64_MAX:
        digits = len(str(abs(raw)))
        out.append(f"{format_loc(loc)}: the integer ({digits} digits) is larger than 2^63-1; use a sensible value")
    elif isinstance(raw, float) and not math.isfinite(raw):
        out.append(f"{format_loc(loc)}: {raw} is not a finite number")
    return out


def read_suite_file(suite: str | os.PathLike) -> tuple[str, dict]:
    """A suite name or file -> (its display path, its YAML mapping); :class:`SuiteError` otherwise.

    Refused with one message naming the file: a directory, an unreadable, empty, oversized or
    non-UTF-8 file, invalid YAML, duplicate keys, more than :data:`MAX_ALIASES` aliases, a
    top level that is not a mapping, integers beyond int64 and non-finite floats.
    """
    path = resolve_suite_path(suite)
    where = _display(path)
    if path.is_dir():
        raise SuiteError(f"{where}: is a directory; give a suite YAML file (e.g. {where}/<name>.yaml) or a suite name")
    if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
        raise SuiteError(f"{where}: not a regular file (a pipe, device or socket); give a suite YAML file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"{where}: cannot read the suite file: {e.strerror or e}") from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{where}: larger than {MAX_SUITE_BYTES >> 20} MiB; is this a suite file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SuiteError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}); "
                         "save the suite as UTF-8") from None
    if not text.strip():
        raise SuiteError(f"{where}: the file is empty; a suite needs at least name, dataset, methods and metrics")
    try:
        # verified-load: _SuiteLoader is a SafeLoader subclass (no python tags), with alias limits
        raw = yaml.load(text, Loader=_SuiteLoader)  # noqa: S506
    except yaml.YAMLError as e:
        raise SuiteError(f"{where}: not valid YAML: {e}") from None
    except RecursionError:
        raise SuiteError(f"{where}: not valid YAML: nested too deeply") from None
    if raw is None:
        raise SuiteError(f"{where}: the file holds no YAML content (only comments?); a suite needs at least "
                         "name, dataset, methods and metrics")
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a YAML mapping (name: ..., dataset: ..., ...), "
                         f"got a {type(raw).__name__}")
    big = _too_big(raw)
    if big:
        raise SuiteError("\n".join(f"{where}: {line}" for line in big))
    return where, raw


def load_suite(suite: str | os.PathLike, check_registry: bool = True, plugins: tuple[str, ...] | list[str] = ()) -> Suite:
    """Load, parse and validate a suite.

    Raises :class:`SuiteError` naming the file and every offending field path.
    With ``check_registry`` the suite's plugins are imported and the adapters, their params and
    budgets, the metrics and their params, and the capabilities each metric needs are checked too,
    all problems together (:func:`bench.plan.load`). ``plugins``: modules to import first (``--plugin``).
    """
    if check_registry:
        from bench.plan import load  # the checks against the registries live with plan resolution

        return load(suite, plugins)
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
