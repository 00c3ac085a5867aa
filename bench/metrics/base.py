"""Metric interface: one class per metric, registered by name.

A metric declares ``requires`` (the adapter capabilities it needs: contracts of
:mod:`bench.adapter`, and it uses no other adapter member), a pydantic ``Params`` model
(validated against the suite), ``inputs(params)`` (the image sets and features it consumes,
:class:`bench.inputs.InputSpec`; the cell's provider makes each once) and
``compute(adapter, ctx, params) -> dict[str, float]``.
Its output keys are described by ``outputs``: key -> :class:`Column` (display name,
direction, unit). Extra provenance (sample counts, extractor, weights sha256) goes to
``ctx.log_param``; columns that differ in extractor or n carry it in ``Column.header``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bench.errors import BenchError, MetricError


MAX_NFE = 4096
"""Most sampler steps (NFE) a metric may ask for: ten times the longest schedule of the literature's
diffusion samplers (1000 steps); more is a typo (10^9 steps would sample for years)."""


class MetricParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


SCORE, COST, DESCRIPTIVE = "score", "cost", "descriptive"
GROUPS = ("quality", "likelihood", "representation", "cost", "descriptive")


@dataclass(frozen=True)
class Column:
    """How one metric output appears on the leaderboard.

    ``higher_is_better``: True/False gives a score's ↑/↓; ``None`` makes it a *descriptive*
    statistic (no better/worse: no arrow, never coloured, gated two-sided only).
    ``kind``: ``score`` | ``cost`` (↓, with a unit) | ``descriptive`` (default: descriptive when
    ``higher_is_better`` is None, else score). ``group``: one of :data:`GROUPS` (default: quality,
    cost for costs, descriptive for descriptive statistics). ``short``: a few-letter id for narrow
    tables (default: derived from the key). ``uncertainty``: how the logged ``<key>_stderr`` is
    measured (empty: the metric logs none).
    """

    title: str
    higher_is_better: bool | None
    unit: str = ""
    kind: str = ""
    group: str = ""
    short: str = ""
    uncertainty: str = ""

    def __post_init__(self):
        kind = self.kind or (DESCRIPTIVE if self.higher_is_better is None else SCORE)
        if kind == DESCRIPTIVE and self.higher_is_better is not None:
            raise ValueError(f"column {self.title!r}: a descriptive statistic has no direction")
        if kind == COST and self.higher_is_better is not False:
            raise ValueError(f"column {self.title!r}: a cost is lower-is-better")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "group", self.group or {COST: "cost", DESCRIPTIVE: "descriptive"}.get(kind, "quality"))
        if self.group not in GROUPS:
            raise ValueError(f"column {self.title!r}: group {self.group!r} not in {GROUPS}")

    @property
    def descriptive(self) -> bool:
        return self.kind == DESCRIPTIVE

    @property
    def arrow(self) -> str:
        if self.higher_is_better is None:
            return ""
        return "↑" if self.higher_is_better else "↓"


def stderr_key(key: str) -> str:
    """Metric key of the within-cell sampling standard error of ``key`` (omitted when not measured)."""
    return f"{key}_stderr"


class Metric:
    requires: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[MetricParams]] = MetricParams
    registry_name: ClassVar[str] = "?"

    @classmethod
    def columns(cls, params: MetricParams) -> dict[str, Column]:
        """Output key -> column description, for these parameters."""
        raise NotImplementedError

    @classmethod
    def inputs(cls, params: MetricParams) -> list:
        """The inputs ``compute`` takes from ``bench.inputs.provider(ctx)`` (list of ``InputSpec``)."""
        return []

    def compute(self, adapter: Any, ctx: Any, params: MetricParams) -> dict[str, float]:
        raise NotImplementedError


def check_finite(values: dict[str, float], where: str) -> dict[str, float]:
    """Raise :class:`MetricError` if any value is NaN/inf (those are never logged to MLflow)."""
    bad = {k: v for k, v in values.items() if v is None or not math.isfinite(float(v))}
    if bad:
        raise MetricError(f"{where}: non-finite metric value(s) {bad}")
    return {k: float(v) for k, v in values.items()}


def all_columns(suite) -> dict[str, Column]:
    """Every output column of a suite's metrics, in suite order."""
    from bench import registry

    cols: dict[str, Column] = {}
    for spec in suite.metrics:
        cls = registry.meta("metric", spec.name)
        if cls is None:
            raise BenchError(f"unknown metric {spec.name!r}; known: {', '.join(registry.known('metric'))}")
        cols.update(cls.columns(cls.Params.model_validate(spec.params)))
    return cols
