"""Sampling temperature as a harness-level knob (the temperature sweep of sample metrics).

A method takes part in a temperature sweep (``temperatures: [...]`` on ``gfid``, ``gfd_fmnist``,
``prc``; :class:`bench.metrics.frechet.TemperatureParams`) when its adapter's ``Params`` has a
``temperature`` field that its ``sample`` reads (the tokenizer + AR-prior family: vq, vcq, wartok,
prologue). :func:`at_temperature` draws with that field replaced for the duration of the call and
restores it afterwards; nothing is retrained (no adapter's training cache key contains its
sampling temperature). :func:`supports_temperature` is what ``bench validate`` checks, without torch.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from bench.errors import MetricError

FIELD = "temperature"


def supports_temperature(params_model: Any) -> bool:
    """Whether an adapter ``Params`` class (pydantic model) has a sampling ``temperature`` field."""
    return FIELD in (getattr(params_model, "model_fields", None) or {})


@contextmanager
def at_temperature(adapter: Any, temperature: float | None) -> Iterator[Any]:
    """Within the block, ``adapter.params.temperature == temperature`` (None: leave it as configured).

    Raises :class:`MetricError` if the adapter has no ``temperature`` param (``bench validate``
    reports that before any work; this guards adapters built in code).
    """
    if temperature is None:
        yield adapter
        return
    params = adapter.params
    if not supports_temperature(type(params)):
        raise MetricError(f"adapter {getattr(adapter, 'registry_name', adapter)!r} has no `{FIELD}` param, so it "
                          "cannot be sampled at a swept temperature; remove `temperatures` from the metric")
    adapter.params = params.model_copy(update={FIELD: float(temperature)})
    try:
        yield adapter
    finally:
        adapter.params = params
