"""The PEFT suites validate; the 8B suite without weights fails fast naming QWEN3_8B_DIR."""
from __future__ import annotations

import time

import pytest


def test_suites_validate():
    from bench.suite_file import load_suite

    tiny = load_suite("peft_qwen3_tiny")
    big = load_suite("peft_qwen3_8b")
    assert tiny.base_model["name"] == "qwen3-tiny" and big.base_model["name"] == "qwen3-8b"
    assert tiny.baseline_method().adapter == "lora"


def test_base_model_check_names_the_variable(monkeypatch, tmp_path):
    from bench.errors import DatasetMissing
    from adapters.peft.base_models import check_base_model

    monkeypatch.delenv("QWEN3_8B_DIR", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(DatasetMissing) as e:
        check_base_model({"name": "qwen3-8b"})
    assert time.perf_counter() - t0 < 2
    assert "QWEN3_8B_DIR" in str(e.value) and "config.json" in str(e.value) and "safetensors" in str(e.value)
    # a directory with only part of the layout: the missing files are named
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')
    monkeypatch.setenv("QWEN3_8B_DIR", str(tmp_path))
    with pytest.raises(DatasetMissing) as e:
        check_base_model({"name": "qwen3-8b"})
    assert "*.safetensors" in str(e.value) and "tokenizer.json" in str(e.value) and "QWEN3_8B_DIR" in str(e.value)


def test_8b_suite_run_fails_fast(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from bench.cli import main

    monkeypatch.delenv("QWEN3_8B_DIR", raising=False)
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, ["run", "peft_qwen3_8b", "--seed", "0", "--no-progress",
                                    "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    elapsed = time.perf_counter() - t0
    assert res.exit_code == 2, res.output
    assert "QWEN3_8B_DIR" in res.output
    assert elapsed < 30
    assert not (tmp_path / "mlflow.db").exists()  # nothing was logged


def test_pareto_front_and_figure(tmp_path):
    from types import SimpleNamespace

    from adapters.peft.pareto import pareto_figures, pareto_front

    assert pareto_front([(1, 0.5), (2, 0.4), (3, 0.9), (0.5, 0.1)]) == [3, 0, 2]

    class Row(SimpleNamespace):
        def mean(self, k):
            return self.vals.get(k)

        def std(self, k):
            return 0.01 if k in self.vals else None

    rows = [Row(label="a", vals={"accuracy": 0.7, "trainable_params": 100, "s_per_step": 0.1}),
            Row(label="b", vals={"accuracy": 0.5, "trainable_params": 50, "s_per_step": 0.2})]
    board = SimpleNamespace(rows=rows, suite=SimpleNamespace(name="t"))
    paths = pareto_figures(board, tmp_path)
    assert len(paths) == 1 and paths[0].exists() and paths[0].stat().st_size > 1000
