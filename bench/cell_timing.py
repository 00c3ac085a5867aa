"""Where a cell's time goes: the method's own work, the instruments, the metrics and the harness.

Every cell logs its wall time split into five parts (seconds ``time_<part>_s`` and shares
``time_<part>_share``, beside ``cell_seconds``), shown in the board's cost group and the export:

| part | what is charged to it |
|---|---|
| ``train`` | the adapter's ``prepare``: training, or loading its cached weights (rewards and judges it calls included) |
| ``method`` | every call of an adapter member after ``prepare``: sampling, encoding/decoding, likelihoods |
| ``instrument`` | the forwards of the measuring networks (Inception, the Fashion-MNIST classifier and judges) |
| ``metric`` | the metrics' own arithmetic and bookkeeping (Fréchet statistics, probes, tests), less the two above |
| ``harness`` | the rest of the cell: data set, plan, lease, store and logging round trips, artefacts |

The split is exclusive: time inside a nested part goes to the inner part only, except inside
``train`` and ``method`` (the method's own cost), where whatever the method calls stays charged to it.
The clock is a context variable set by :func:`clocked`; outside a cell :func:`phase` does nothing.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import time
from contextvars import ContextVar
from typing import Any, Callable, Iterator

PARTS = ("train", "method", "instrument", "metric", "harness")
_OPAQUE = ("train", "method")  # the method's own cost: what it calls stays charged to it


class CellClock:
    """Exclusive seconds per part since the clock started (:data:`PARTS`; ``harness`` is the remainder)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds = dict.fromkeys(PARTS[:-1], 0.0)
        self._stack: list[list] = []  # [part, started, seconds spent in nested parts]

    @contextlib.contextmanager
    def phase(self, part: str) -> Iterator[None]:
        if part not in self.seconds:
            raise ValueError(f"unknown part {part!r}; parts: {list(self.seconds)}")
        if self._stack and (self._stack[-1][0] in _OPAQUE or self._stack[-1][0] == part):
            yield  # charged to the enclosing part
            return
        frame = [part, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            spent = time.perf_counter() - frame[1]
            self.seconds[part] += spent - frame[2]
            if self._stack:
                self._stack[-1][2] += spent

    def breakdown(self, total: float | None = None) -> dict[str, float]:
        """``time_<part>_s`` and ``time_<part>_share`` of ``total`` seconds (default: since the start)."""
        total = time.perf_counter() - self.start if total is None else total
        secs = dict(self.seconds)
        secs["harness"] = max(total - sum(secs.values()), 0.0)
        out = {f"time_{k}_s": v for k, v in secs.items()}
        out.update({f"time_{k}_share": (v / total if total > 0 else 0.0) for k, v in secs.items()})
        return out


_clock: ContextVar[CellClock | None] = ContextVar("bench_cell_clock", default=None)


@contextlib.contextmanager
def clocked(clock: CellClock | None = None) -> Iterator[CellClock]:
    """``clock`` (default: a fresh :class:`CellClock`) is the current cell's for the code inside."""
    clock = clock or CellClock()
    token = _clock.set(clock)
    try:
        yield clock
    finally:
        _clock.reset(token)


def phase(part: str) -> contextlib.AbstractContextManager:
    """Charge the code inside to ``part`` of the current cell's clock (nothing outside a cell)."""
    clock = _clock.get()
    return clock.phase(part) if clock is not None else contextlib.nullcontext()


def charged(part: str) -> Callable[[Callable], Callable]:
    """Decorator: every call of the function is charged to ``part`` (e.g. an instrument's forward)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*a, **kw):
            with phase(part):
                return fn(*a, **kw)

        return inner

    return wrap


def charge_members(adapter: Any, base: type) -> None:
    """Charge every public method the adapter's class (and its parents below ``base``) defines to ``method``.

    Instance attributes shadow the class's functions, so calls from metrics, inputs and the adapter
    itself all go through the clock; properties, class and static methods are left alone."""
    seen: set[str] = set()
    for cls in type(adapter).__mro__:
        if cls is base or cls is object or not issubclass(cls, base):
            continue
        for name, attr in vars(cls).items():
            if name.startswith("_") or name == "prepare" or name in seen or not inspect.isfunction(attr):
                continue
            seen.add(name)
            setattr(adapter, name, charged("method")(getattr(adapter, name)))
