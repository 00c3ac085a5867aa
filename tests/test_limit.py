"""`bench run SUITE --limit N` (bench.limit): every count capped at N, a suite of its own, never mixed with full runs."""
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, Field

from bench.cli import main
from bench.errors import SuiteError
from bench.limit import cap, limit_of
from bench.plan import CellSpec, resolve

SMOKE = str(Path(__file__).parent / "suites" / "smoke.yaml")


def test_limit_caps_data_budgets_and_metric_counts_not_architecture():
    full, lim = resolve(SMOKE), resolve(SMOKE, limit=3)
    assert lim.suite.name == "smoke.limit3" and limit_of(lim.suite.name) == 3 and limit_of("smoke") is None
    assert (lim.suite.dataset.n_train, lim.suite.dataset.n_test) == (6, 6)  # from 600 / 200: 2N, room for two sets of N
    for f, c in zip(full.cells, lim.cells):
        assert c.params == f.params  # the same networks
        assert {k: v for k, v in c.budget.items() if k.endswith(("_steps", "_batch"))} == \
               {"tokenizer_steps": 3, "tokenizer_batch": 3, "prior_steps": 3, "prior_batch": 3}
        assert f.budget["tokenizer_steps"] == 20 and f.budget["tokenizer_lr"] == c.budget["tokenizer_lr"]
        probe = {m.name: m.params for m in c.metrics}["probe"]
        assert probe["n_train"] == 3 and probe["ks"] == [1, 2, "all"]  # a count capped, a list of prefixes not
        assert c.config()["limit"] == 3 and "limit" not in f.config()
        assert c.config_hash != f.config_hash
        assert CellSpec.from_json(c.to_json()).config_hash == c.config_hash  # the hash survives the file


def test_limit_above_every_count_still_changes_the_identity():
    full, lim = resolve(SMOKE), resolve(SMOKE, limit=10**6)
    assert lim.suite.dataset.n_train == 600 and lim.cells[0].budget == full.cells[0].budget
    assert lim.cells[0].config_hash != full.cells[0].config_hash  # a limited run never reads as a full one


def test_cap_keeps_each_field_at_its_own_minimum_and_leaves_non_counts():
    class P(BaseModel):
        n: int = Field(1000, ge=16)
        steps: int = Field(50, gt=4)
        width: int = 64

    got = cap({"n": 1000, "steps": 50, "width": 64, "nested": {"n_test": 90, "k": 9}, "flag": True}, 2, P)
    assert got == {"n": 16, "steps": 5, "width": 64, "nested": {"n_test": 2, "k": 9}, "flag": True}


def test_limit_refuses_a_non_positive_n_and_a_limited_suite():
    s = resolve(SMOKE).suite
    with pytest.raises(SuiteError, match="positive integer"):
        resolve(s, limit=0)
    with pytest.raises(SuiteError, match="limited already"):
        resolve(resolve(SMOKE, limit=2).suite, limit=2)
    r = CliRunner().invoke(main, ["run", SMOKE, "--limit", "0"], prog_name="bench")
    assert r.exit_code == 2 and "--limit" in r.output


@pytest.mark.slow
def test_limited_run_is_tagged_and_absent_from_the_full_suite(tmp_path):
    import mlflow

    from bench import leaderboard
    from bench.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = CliRunner().invoke(main, ["--results-dir", str(tmp_path), "run", SMOKE, "--limit", "2", "--workers", "1",
                                  "--no-progress", "--tracking-uri", uri], prog_name="bench")
    assert r.exit_code == 0, r.output[-3000:]
    assert (tmp_path / "smoke.limit2" / "leaderboard.md").exists()
    client = mlflow.MlflowClient(uri)
    assert client.get_experiment_by_name("smoke") is None  # its own experiment
    runs = client.search_runs([client.get_experiment_by_name("smoke.limit2").experiment_id])
    cells = [x for x in runs if x.data.tags["bench.kind"] == "cell"]
    assert len(cells) == 2 and {x.info.status for x in cells} == {"FINISHED"}
    assert {x.data.tags["bench.limit"] for x in runs} == {"2"}  # the cells and the suite run
    want = {c.method: c.config_hash for c in resolve(SMOKE, limit=2).cells}
    assert {x.data.tags["bench.method"]: x.data.tags["bench.config_hash"] for x in cells} == want
    board = leaderboard.build(resolve(SMOKE).suite, Tracker(uri))  # the full suite sees none of them
    assert {row.method for row in board.rows} == {"vq", "vcq"} and all(not row.seeds for row in board.rows)


SHIPPED = sorted((Path(__file__).parent.parent / "suites").glob("*.yaml"))


@pytest.mark.parametrize("suite", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_suite_plans_under_limit_4(suite):
    try:
        full = resolve(suite)
    except SuiteError as e:  # needs data that is not here even to plan (e.g. cifar10_diffusion without CIFAR10_DIR)
        pytest.skip(f"does not plan here without --limit either: {str(e)[:200]}")
    lim = resolve(suite, limit=4)
    from bench.registry import meta

    ds = lim.suite.dataset
    assert len(lim.cells) == len(full.cells)
    if getattr(meta("dataset", ds.name), "limit_splits", True):
        assert ds.n_test <= 8  # 2N
    else:  # a byte stream keeps its splits (test_limit_leaves_a_byte_stream_whole_and_caps_its_work)
        assert ds.n_test == full.suite.dataset.n_test
    assert all(c.config()["limit"] == 4 for c in lim.cells)


def test_a_limit_below_a_metric_minimum_names_the_limit_and_the_check():
    with pytest.raises(SuiteError) as e:
        resolve("cifar10", limit=2)  # precision/recall's k = 3 nearest neighbours needs n > 3
    assert str(e.value).startswith("--limit 2: ") and "k (3) must be < n (2)" in str(e.value)


def test_a_suite_file_may_not_take_a_limited_name(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(Path(SMOKE).read_text().replace("name: smoke", "name: smoke.limit3"))
    r = CliRunner().invoke(main, ["validate", str(p)], prog_name="bench")
    assert r.exit_code == 2 and f"{p}: name: 'smoke.limit3' ends in .limit<N>" in r.output, r.output


def test_limit_leaves_a_byte_stream_whole_and_caps_its_work():
    # llm_text's n_train / n_test would be bytes: N bytes is no text (a window of seq bytes cannot be cut)
    from bench.registry import meta

    assert meta("dataset", "llm_text").limit_splits is False
    lim = resolve("llm_internals_tiny", limit=4)
    assert (lim.suite.dataset.n_train, lim.suite.dataset.n_test) == (None, None)
    assert all(c.budget["steps"] <= 4 for c in lim.cells if "steps" in c.budget)
    assert (resolve(SMOKE, limit=4).suite.dataset.n_test) == 8  # image data sets are still cut (2N)
