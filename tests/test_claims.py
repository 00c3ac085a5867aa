"""Claims as tests: parsing, verdicts on synthetic metric tables, validation errors naming fields."""
from __future__ import annotations

import textwrap

import pytest

from bench.claims import (CONTRADICTED, INCONCLUSIVE, SUPPORTED, ClaimSyntaxError, Context, check_claims, evaluate_claim,
                          evaluate_claims, parse_assertion)
from bench.errors import SuiteError
from bench.leaderboard import Row
from bench.suite import ClaimSpec
from bench.suite_file import load_suite


def claim(assertion: str, test: str = "welch", tol: float | None = None, level: float = 0.95, name: str = "c"):
    return ClaimSpec.model_validate({"name": name, "paper": "arXiv test", "assert": assertion, "test": test,
                                     "tol": tol, "level": level})


def row(method: str, **metrics: list[float]) -> Row:
    n = max(len(v) for v in metrics.values())
    return Row(method, method, False, "h", seeds=list(range(n)), per_seed={k: list(v) for k, v in metrics.items()})


# vcq clearly better than vq on gfid (3 seeds), tied within noise on rfid, clearly worse on probe.
TABLE = [
    row("vq", gfid=[20.0, 20.5, 19.8], rfid=[5.0, 5.3, 4.9], probe_k10=[0.60, 0.61, 0.59], ar_loss=[3.0, 3.1, 2.9]),
    row("vcq", gfid=[15.0, 15.2, 14.9], rfid=[5.1, 4.8, 5.2], probe_k10=[0.40, 0.42, 0.41], ar_loss=[3.05, 2.9, 3.1]),
    row("one", gfid=[10.0], rfid=[5.0], probe_k10=[0.9], ar_loss=[1.0]),
]


@pytest.mark.parametrize("test", ["welch", "bootstrap"])
def test_each_verdict_where_it_should(test):
    assert evaluate_claim(claim("gfid(vcq) < gfid(vq)", test), TABLE).verdict == SUPPORTED
    assert evaluate_claim(claim("gfid(vq) > gfid(vcq)", test), TABLE).verdict == SUPPORTED
    assert evaluate_claim(claim("probe@10(vcq) > probe@10(vq)", test), TABLE).verdict == CONTRADICTED
    # overlapping intervals -> inconclusive
    assert evaluate_claim(claim("ar_loss(vcq) < ar_loss(vq)", test), TABLE).verdict == INCONCLUSIVE
    # one seed and no seed-noise model -> inconclusive, whatever the means say
    v = evaluate_claim(claim("gfid(one) < gfid(vq)", test), TABLE)
    assert v.verdict == INCONCLUSIVE and "(n=1)" in v.detail and "no seed-noise model" in v.detail
    assert v.basis == "1 seed: no seed-noise model"
    # the old sampling-only test (kept for the A/A 'before' column): no logged stderr -> inconclusive too
    v = evaluate_claim(claim("gfid(one) < gfid(vq)", test), TABLE, Context(sampling_only=True))
    assert v.verdict == INCONCLUSIVE and "no sampling uncertainty" in v.detail
    assert v.basis == "1 seed: sampling uncertainty only"
    # equivalence within tol: supported with a wide tol, inconclusive with a tiny one, contradicted when far apart
    assert evaluate_claim(claim("|rfid(vcq) - rfid(vq)| <= tol", test, tol=2.0), TABLE).verdict == SUPPORTED
    assert evaluate_claim(claim("|rfid(vcq) - rfid(vq)| <= tol", test, tol=0.01), TABLE).verdict == INCONCLUSIVE
    assert evaluate_claim(claim("|gfid(vcq) - gfid(vq)| <= tol", test, tol=1.0), TABLE).verdict == CONTRADICTED


def test_conjunctions_and_details():
    both = claim("gfid(vcq) < gfid(vq) and |rfid(vcq) - rfid(vq)| <= tol", tol=2.0)
    v = evaluate_claim(both, TABLE)
    assert v.verdict == SUPPORTED
    assert "Welch p=" in v.detail and "CI" in v.detail and "gfid(vcq)=" in v.detail and "(n=3)" in v.detail
    assert evaluate_claim(claim("gfid(vcq) < gfid(vq) and probe@10(vcq) > probe@10(vq)"), TABLE).verdict == CONTRADICTED
    assert evaluate_claim(claim("gfid(vcq) < gfid(vq) and ar_loss(vcq) < ar_loss(vq)"), TABLE).verdict == INCONCLUSIVE
    assert evaluate_claim(claim("probe@10(vcq) > probe@10(vq) or gfid(vcq) < gfid(vq)"), TABLE).verdict == SUPPORTED
    # a method without values -> inconclusive, saying so
    v = evaluate_claim(claim("gfid(ghost) < gfid(vq)"), TABLE)
    assert v.verdict == INCONCLUSIVE and "no values" in v.detail


def test_welch_matches_scipy():
    from scipy import stats

    v = evaluate_claim(claim("gfid(vcq) < gfid(vq)"), TABLE)
    p = stats.ttest_ind([15.0, 15.2, 14.9], [20.0, 20.5, 19.8], equal_var=False).pvalue
    assert v.parts[0]["p_value"] == pytest.approx(p, rel=1e-9)


def test_level_matters():
    rows = [row("a", m=[1.0, 1.2, 0.9, 1.1]), row("b", m=[1.25, 1.5, 1.2, 1.45])]
    assert evaluate_claim(claim("m(a) < m(b)", level=0.8), rows).verdict == SUPPORTED
    assert evaluate_claim(claim("m(a) < m(b)", level=0.999), rows).verdict == INCONCLUSIVE


def test_bootstrap_is_deterministic_and_allows_nonlinear():
    import numpy as np

    rng = np.random.default_rng(0)  # the bootstrap is used from BOOTSTRAP_MIN_SEEDS (30) seeds per method
    many = [row("vq", rfid=list(5 + 0.2 * rng.standard_normal(30))),
            row("vcq", rfid=list(5 + 0.2 * rng.standard_normal(30)))]
    c = claim("|rfid(vcq) - rfid(vq)| <= 0.2 * rfid(vq)", test="bootstrap")
    a, b = evaluate_claim(c, many), evaluate_claim(c, many)
    assert a.detail == b.detail and a.verdict == SUPPORTED and "bootstrap (10000 resamples)" in a.detail
    # 3 seeds: not calibrated; a non-linear expression has no Welch fallback -> inconclusive, saying why
    v = evaluate_claim(c, TABLE)
    assert v.verdict == INCONCLUSIVE and "not calibrated" in v.detail


def test_evaluate_claims_on_suite_like_object():
    class S:
        claims = [claim("gfid(vcq) < gfid(vq)", name="x"), claim("gfid(one) < gfid(vq)", name="y")]

    out = evaluate_claims(S, TABLE)
    assert [(v.name, v.verdict) for v in out] == [("x", SUPPORTED), ("y", INCONCLUSIVE)]
    assert all(hasattr(v, a) for v in out for a in ("name", "paper", "assertion", "verdict", "detail"))


@pytest.mark.parametrize("bad", ["gfid(vq) <", "gfid(vq) == gfid(vcq)", "__import__('os').system('x') < 1",
                                 "gfid(vq).real < 1", "gfid(vq) < x", "lambda: 1", "gfid(vq)", "|gfid(vq) < 1",
                                 "foo@3(vq) < 1", "1 < gfid(vq) < 3"])
def test_malformed_assertions_raise(bad):
    with pytest.raises(ClaimSyntaxError):
        parse_assertion(bad)


def test_probe_key_mapping():
    p = parse_assertion("probe@16(prologue) > probe@16(vq)")
    assert {r.key for r in p.refs} == {"probe_k16"} and {r.method for r in p.refs} == {"prologue", "vq"}


def _suite_yaml(tmp_path, claims: str, extra_metric: str = ""):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent("""\
        name: claimtest
        dataset: {name: fmnist, n_train: 100, n_test: 100}
        methods:
          - {name: vq, adapter: vq, baseline: true}
          - {name: vcq, adapter: vcq}
        metrics:
          - {name: ar_loss}
          - {name: probe, params: {ks: [1, 10]}}
        """) + (f"  - {extra_metric}\n" if extra_metric else "") + "claims:\n"
        + textwrap.indent(textwrap.dedent(claims), "  "))
    return p


def test_malformed_claim_in_suite_names_the_field(tmp_path):
    with pytest.raises(SuiteError, match=r"s\.yaml: claims\[1\]\.assert: "):
        load_suite(_suite_yaml(tmp_path, """\
            - {name: ok, paper: p, assert: "ar_loss(vcq) < ar_loss(vq)"}
            - {name: bad, paper: p, assert: "ar_loss(vcq) <<< ar_loss(vq)"}
            """))


def test_unknown_method_metric_and_missing_tol_name_the_field(tmp_path):
    with pytest.raises(SuiteError) as e:
        load_suite(_suite_yaml(tmp_path, """\
            - {name: a, paper: p, assert: "gfid(vcq) < gfid(vq)"}
            - {name: b, paper: p, assert: "probe@10(vcq) > probe@10(nope)"}
            - {name: c, paper: p, assert: "|ar_loss(vcq) - ar_loss(vq)| <= tol"}
            - {name: d, paper: p, assert: "ar_loss(vcq) * ar_loss(vq) < 1"}
            """))
    msg = str(e.value)
    assert "claims[0].assert: unknown metric 'gfid'" in msg
    assert "claims[1].assert: unknown method 'nope'" in msg
    assert "claims[2].tol:" in msg
    assert "claims[3].test:" in msg and "bootstrap" in msg


def test_valid_claims_load(tmp_path):
    s = load_suite(_suite_yaml(tmp_path, """\
        - {name: a, paper: p, assert: "probe@10(vcq) > probe@10(vq)", paper_numbers: {vq: 0.2, vcq: 0.3}}
        - {name: b, paper: p, assert: "|ar_loss(vcq) - ar_loss(vq)| <= tol", tol: 0.1, test: bootstrap, level: 0.9}
        """))
    assert len(s.claims) == 2 and check_claims(s, ["ar_loss", "probe_k10"]) == []


@pytest.mark.parametrize("assertion,code", [("gfid(vcq) < gfid(vq)", 0), ("probe@10(vcq) > probe@10(vq)", 1),
                                            ("ar_loss(vcq) < ar_loss(vq)", 0)])
def test_cli_claims_exits_nonzero_only_when_contradicted(tmp_path, monkeypatch, assertion, code):
    from click.testing import CliRunner

    import bench.leaderboard
    from bench.cli import main

    p = _suite_yaml(tmp_path, f'- {{name: c, paper: p, assert: "{assertion}"}}\n', "{name: gfid, params: {n: 10}}")
    monkeypatch.setattr(bench.leaderboard, "collect", lambda suite, tracker: TABLE)
    res = CliRunner().invoke(main, ["claims", str(p), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert res.exit_code == code, res.output
    assert "supported" in res.output and "contradicted" in res.output  # the summary line counts all three
