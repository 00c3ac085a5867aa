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


class MetricParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Column:
    """How one metric output appears on the leaderboard. ``higher_is_better`` gives ↑/↓."""

    title: str
    higher_is_better: bool
    unit: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


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
