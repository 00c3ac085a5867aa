"""The per-cell time breakdown (bench.cell_timing): exclusive parts that add up to the cell's time."""
import time

import pytest

from bench import cell_timing
from bench.adapter import Adapter
from bench.cell_timing import CellClock, charge_members, charged, clocked, phase


def _spin(s):
    t = time.perf_counter()
    while time.perf_counter() - t < s:
        pass


@charged("instrument")
def _forward(s):
    _spin(s)


class Base(Adapter):
    def sample(self, s):
        _spin(s)
        return self.decode(s)  # a member calling another: charged once, to the method

    def decode(self, s):
        _spin(s)
        return "ok"


class Child(Base):
    def decode(self, s):  # an override is the member that is charged
        _spin(2 * s)
        return "child"

    @property
    def size(self):
        return 3


def test_parts_are_exclusive_and_add_up():
    clock = CellClock()
    with clocked(clock):
        with phase("train"):
            _spin(0.02)
            _forward(0.05)  # a reward/judge call inside training stays the method's training
        a = Child.__new__(Child)
        charge_members(a, Adapter)
        with phase("metric"):
            _spin(0.02)
            assert a.sample(0.01) == "child" and a.size == 3
            _forward(0.03)
    total = 0.25
    b = clock.breakdown(total)
    assert b["time_train_s"] == pytest.approx(0.07, abs=0.015)
    assert b["time_method_s"] == pytest.approx(0.03, abs=0.015)
    assert b["time_instrument_s"] == pytest.approx(0.03, abs=0.015)
    assert b["time_metric_s"] == pytest.approx(0.02, abs=0.015)
    secs = [b[f"time_{p}_s"] for p in cell_timing.PARTS]
    assert sum(secs) == pytest.approx(total)
    assert sum(b[f"time_{p}_share"] for p in cell_timing.PARTS) == pytest.approx(1.0)


def test_outside_a_cell_nothing_is_charged():
    assert _forward(0.0) is None  # no clock: a plain call
    with pytest.raises(ValueError, match="unknown part"):
        with CellClock().phase("sampling"):
            pass
