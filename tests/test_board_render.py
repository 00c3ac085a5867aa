"""Terminal table (width), HTML report (escaping, self-containment), JSON export of a synthetic board."""
from __future__ import annotations

import json
import re

import pytest

from board_fixture import EVIL_LABEL, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("board")
    return make_store(d, f"sqlite:///{d / 'mlflow.db'}")


@pytest.fixture
def board(store, results_dir):
    from bench import leaderboard

    return leaderboard.build(*store)


def test_one_seed_board_without_seed_noise_model_decides_nothing(board):
    rows = {r.method: r for r in board.rows}
    e = rows["vcq"].estimate("bits_per_image")
    assert e.source == "sampling error" and e.se == pytest.approx(0.2)
    # -4 ± 1.96*0.28 excludes 0, but the sampling error is not the between-seed spread: no star
    assert not board.significant(rows["vcq"], "bits_per_image")
    verdicts = {v.name: v for v in board.claims}
    assert verdicts["vcq lowers NLL"].verdict == "inconclusive"
    assert verdicts["vcq lowers NLL"].basis == "1 seed: no seed-noise model"
    assert "no seed-noise model" in board.noise_note


def _with_model(store, tmp_path, sd: float, hash_of=None):
    """The board of the fixture's suite with a seed-noise model file (sd for every metric, 6 seeds of vq)."""
    from bench import leaderboard, seed_noise
    from bench.plan import config_hash

    suite, tracker = store
    vq = suite.method("vq")
    keys = ["bits_per_image", "probe_k1", "ar_loss", "cliff_position"]
    model = seed_noise.SeedNoiseModel(suite.name, "", {"vq": {
        "config_hash": hash_of or config_hash(suite, vq), "seeds": list(range(6)),
        "values": {k: [1.0 + sd * (i - 2.5) / 1.8708287 for i in range(6)] for k in keys}}},  # sample SD = sd
        {k: seed_noise.MetricNoise(sd, None, 6, 5) for k in keys})
    path = seed_noise.write(model, tmp_path / "m.seed_noise.json")
    s2 = suite.model_copy(update={"seed_noise": str(path)})
    return leaderboard.build(s2, tracker)


def test_one_seed_board_with_seed_noise_model(store, results_dir, tmp_path):
    b = _with_model(store, tmp_path, sd=0.1)
    rows = {r.method: r for r in b.rows}
    e = rows["vcq"].estimate("bits_per_image")
    assert e.source == "sampling error + seed-noise model" and e.se == pytest.approx((0.2 ** 2 + 0.1 ** 2) ** 0.5)
    assert b.significant(rows["vcq"], "bits_per_image")  # -4 ± t * 0.32
    assert not b.significant(rows["vcq"], "cliff_position")  # descriptive: never marked
    verdicts = {v.name: v for v in b.claims}
    assert verdicts["vcq lowers NLL"].verdict == "supported"
    assert verdicts["vcq lowers NLL"].basis.startswith("1 seed + seed-noise model (6 seeds of vq)")
    assert verdicts["vcq lowers NLL"].aa["splits"] == 30  # 6 seeds, 2 arms of one seed each, ordered
    assert verdicts["vcq lowers NLL"].aa["rate"] == 0  # the model's values spread as its SD says
    assert verdicts["probe tie"].verdict == "inconclusive"
    # a large seed spread: the same -4 is no longer detectable
    big = _with_model(store, tmp_path, sd=5.0)
    assert not big.significant({r.method: r for r in big.rows}["vcq"], "bits_per_image")
    assert {v.name: v for v in big.claims}["vcq lowers NLL"].verdict == "inconclusive"
    # a model whose method's config hash is not the suite's current one is refused as stale
    stale = _with_model(store, tmp_path, sd=0.1, hash_of="0" * 16)
    assert "stale seed-noise model" in stale.noise_note
    assert {v.name: v for v in stale.claims}["vcq lowers NLL"].verdict == "inconclusive"


def test_a_model_that_understates_the_seed_spread_is_caught_by_the_aa(store, results_dir, tmp_path):
    """Values that spread 3x the model's SD: the A/A splits decide far above 10 %, so the board does
    not decide the (otherwise supported) claim, and says why."""
    from bench import leaderboard, seed_noise
    from bench.plan import config_hash

    suite, tracker = store
    keys = ["bits_per_image"]
    model = seed_noise.SeedNoiseModel(suite.name, "", {"vq": {
        "config_hash": config_hash(suite, suite.method("vq")), "seeds": list(range(6)),
        "values": {k: [1.0 + 0.3 * (i - 2.5) / 1.8708287 for i in range(6)] for k in keys}}},
        {k: seed_noise.MetricNoise(0.1, None, 6, 5) for k in keys})
    path = seed_noise.write(model, tmp_path / "under.seed_noise.json")
    b = leaderboard.build(suite.model_copy(update={"seed_noise": str(path)}), tracker)
    v = {v.name: v for v in b.claims}["vcq lowers NLL"]
    assert v.statistical_verdict == "supported" and v.aa["rate"] > 0.1
    assert v.verdict == "inconclusive" and "A/A false-decision rate" in v.detail


def test_terminal_table_fits_120_columns(board):
    from rich.console import Console

    from bench.board_terminal import render, select_columns

    con = Console(width=120, record=True, color_system=None)
    render(board, console=con)
    text = con.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "vcq" in text and "INCONCLUSIVE" in text and "1 seed: no seed-noise model" in text
    for r in board.rows:  # one line per method
        assert sum(line.lstrip("│ ").startswith(r.method + " ") for line in text.splitlines()) == 1, r.method
    assert "cliff↑" not in text and "H0↑" not in text  # descriptive: no arrow
    shown, hidden = select_columns(board, 120)
    assert shown and (hidden == [] or "more column(s)" in text)
    wide, none_hidden = select_columns(board, 120, wide=True)
    assert none_hidden == [] and len(wide) == len(board.columns)
    assert select_columns(board, 120, columns=["NLL", "cliff"])[0] == ["bits_per_image", "cliff_position"]
    with pytest.raises(ValueError, match="unknown column"):
        select_columns(board, 120, columns=["nope"])
    # the suite's leaderboard.terminal keys come first (then the rest by group while they fit)
    import copy

    pref = copy.copy(board)
    pref.suite = board.suite.model_copy(update={"leaderboard": board.suite.leaderboard.model_copy(
        update={"terminal": ["cliff_position", "bits_per_image"]})})
    assert select_columns(pref, 400)[0][:2] == ["cliff_position", "bits_per_image"]
    assert select_columns(board, 400)[0][0] != "cliff_position"


def test_html_report_is_self_contained_and_escaped(board, tmp_path):
    from bench.leaderboard import write

    paths = write(board, tmp_path / "out")
    page = paths["html"].read_text()
    assert EVIL_LABEL not in page and "&lt;script&gt;alert(" in page
    assert "<script>alert" not in page
    assert not re.search(r"""src=["']?(https?:)?//""", page) and "<link" not in page  # nothing to fetch
    assert page.count("data:image/png;base64,") >= 3 + 3 + 1  # samples, plots per method, suite figures
    assert "entropy_curves.png" in page and "samples/samples_gfd_fmnist.png" in page
    assert "abc123" in page and "toy cpu" in page  # provenance footer
    for r in board.rows:
        assert r.run_ids[0] in page  # run ids (no tracking server here)
    assert (tmp_path / "out" / "entropy_curves.png").is_file()


def test_json_export_schema(board, tmp_path):
    from click.testing import CliRunner

    from bench.board_export import to_dict
    from bench.cli import main

    doc = to_dict(board)
    assert doc["schema"] == "genbench.results/1" and doc["baseline"] == "vq"
    vcq = doc["results"]["vcq"]
    assert vcq["bits_per_image,none"] == 20.0 and vcq["bits_per_image_stderr,none"] == pytest.approx(0.2)
    assert vcq["cliff_position_stderr,none"] is None  # missing, never 0
    assert vcq["metrics"]["bits_per_image"]["delta_significant"] is False  # one seed, no seed-noise model
    assert "no seed-noise model" in doc["seed_noise"] and doc["premises"] == []
    assert doc["metrics"]["cliff_position"]["higher_is_better"] is None
    assert doc["metrics"]["cliff_position"]["kind"] == "descriptive"
    assert doc["configs"]["vcq"]["config"] and doc["configs"]["vcq"]["run_ids"]
    assert doc["versions"]["torch"] == "2.14.1" and doc["seeds"] == [0]
    json.dumps(doc, allow_nan=False)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["export", str(board.suite.source), "--output", str(out),
                                  "--tracking-uri", board.tracker.uri])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["results"]["vq"]["alias"] == "vq"
    r = CliRunner().invoke(main, ["export", str(board.suite.source), "--format", "csv", "--output",
                                  str(tmp_path / "r.csv"), "--tracking-uri", board.tracker.uri])
    assert r.exit_code == 0 and "'=" not in (tmp_path / "r.csv").read_text()[:0] and "vq" in (tmp_path / "r.csv").read_text()



def test_json_export_keeps_non_finite_values_as_names():
    """A metric may be inf ("never reached the target"): strict JSON has no inf, so it is written as "inf"."""
    import json

    from bench.board_export import json_safe

    doc = json_safe({"a": float("inf"), "b": [1.0, float("nan"), {"c": float("-inf")}], "d": 2})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {"a": "inf", "b": [1.0, "nan", {"c": "-inf"}], "d": 2}


def test_html_report_links_runs_to_an_http_tracking_server(board, monkeypatch):
    """With an http(s) tracking URI every run is a link into that server's MLflow UI (no server needed:
    the store is sqlite, only the URI the report names is faked); with sqlite, bare run ids."""
    from bench import board_html

    plain = board_html.render(board)
    assert "/#/experiments/" not in plain and "bench ui" in plain
    monkeypatch.setattr(board.tracker, "uri", "http://mlflow.lab.example:5000/")
    page = board_html.render(board)
    exp = board.tracker.client.get_run(board.rows[0].run_ids[0]).info.experiment_id
    for r in board.rows:
        for rid in r.run_ids:
            assert f'<a href="http://mlflow.lab.example:5000/#/experiments/{exp}/runs/{rid}">' in page, r.method
    assert "bench ui" not in page  # the local-store hint is only for non-server stores
    assert board_html.run_url("https://h/", "1", "r") == "https://h/#/experiments/1/runs/r"
    assert board_html.run_url("sqlite:///x.db", "1", "r") is None and board_html.run_url("file:///m", "1", "r") is None


def test_lm_eval_export_is_printed_by_lm_evals_make_table(board, tmp_path):
    """`bench export --format lm-eval` writes what lm-eval's own make_table prints as is (no None stderr)."""
    from click.testing import CliRunner

    from bench.cli import main

    make_table = pytest.importorskip("lm_eval.utils").make_table
    out = tmp_path / "lm.json"
    r = CliRunner().invoke(main, ["export", str(board.suite.source), "--format", "lm-eval", "--output", str(out),
                                  "--tracking-uri", board.tracker.uri])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["results"]["vcq"]["cliff_position_stderr,none"] == "N/A"
    assert doc["results"]["vcq"]["bits_per_image,none"] == 20.0 and doc["versions"]["vcq"] == "1"
    table = make_table(doc)
    lines = [line for line in table.splitlines() if "bits_per_image" in line]
    assert len(lines) == 3 and "20.00" in table and "0.2000" in table and "N/A" in table
    print(table)


def test_terminal_table_always_shows_the_columns_the_claims_use(board):
    from bench.board_terminal import claim_keys, select_columns

    assert claim_keys(board.suite) == ["bits_per_image", "probe_k1"]
    shown, hidden = select_columns(board, 40)  # far too narrow for anything else
    assert shown[:2] == ["bits_per_image", "probe_k1"] and hidden
