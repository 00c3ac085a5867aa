"""`precision: float64`: hashed when not the default, applied to the whole cell, restored after,
and kept apart in the cache (docs/ci-gate.md: why the gate suite trains in float64)."""
import textwrap

import torch

from bench.context import Cache
from bench.plan import CellSpec, resolve
from bench.runner import default_dtype, run_cell
from bench.training import to_unit

from conftest import SUITES


def _suite(tmp_path, precision: str | None, steps: int = 20):
    text = (SUITES / "smoke.yaml").read_text().replace("tokenizer_steps: 20", f"tokenizer_steps: {steps}")
    text = text.replace("prior_steps: 20", f"prior_steps: {steps}")
    if precision:
        text += f"precision: {precision}\n"
    p = tmp_path / f"smoke_{precision or 'default'}.yaml"
    p.write_text(text)
    return p


def test_precision_is_hashed_only_when_not_default(tmp_path):
    default = resolve(_suite(tmp_path, None), methods=["vq"])
    f32 = resolve(_suite(tmp_path, "float32"), methods=["vq"])
    f64 = resolve(_suite(tmp_path, "float64"), methods=["vq"])
    assert default.cells[0].config_hash == f32.cells[0].config_hash
    assert "precision" not in default.cells[0].config()
    assert f64.cells[0].config_hash != f32.cells[0].config_hash
    c = f64.cells[0]
    assert c.config()["precision"] == "float64"
    back = CellSpec.from_json(c.to_json())
    assert back == c and back.precision == "float64"
    view = c.suite_view()
    assert view.precision == "float64"


def test_default_dtype_is_scoped_and_cache_kinds_kept_apart(tmp_path):
    cache = Cache(tmp_path / "cache")
    assert cache.path("tokenizer", "k").parent.name == "tokenizer"
    with default_dtype("float64"):
        assert to_unit(torch.zeros(1, 1, 2, 2, dtype=torch.uint8)).dtype == torch.float64
        assert cache.path("tokenizer", "k").parent.name == "tokenizer.float64"
    assert torch.get_default_dtype() == torch.float32
    assert to_unit(torch.zeros(1, 1, 2, 2, dtype=torch.uint8)).dtype == torch.float32


def test_float64_cell_runs_and_its_weights_are_float64(tmp_path, tracking_uri):
    plan = resolve(_suite(tmp_path, "float64", steps=5), methods=["vq"])
    cache = Cache(tmp_path / "cache")
    out = run_cell(plan.cells[0], tracking_uri=tracking_uri, cache=cache, progress=False)
    assert out.status == "finished", out.error
    assert torch.get_default_dtype() == torch.float32
    entries = sorted(p.parent.name for p in (tmp_path / "cache").rglob("*.pt"))
    assert entries and all(e.endswith(".float64") for e in entries), entries
    state = torch.load(next((tmp_path / "cache" / "tokenizer.float64").glob("*.pt")), weights_only=True)["state"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float64}
    assert "ar_loss" in out.metrics
