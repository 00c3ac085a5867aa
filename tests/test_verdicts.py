"""Verdicts a researcher can trust: premises, degenerate arms, the seed-noise model, A/A calibration.

Synthetic rows and a tiny MLflow store (no training): every test here runs in seconds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.claims import (DEGENERATE, FAILS, HOLDS, INCONCLUSIVE, SUPPORTED, UNSETTLED, UNTESTABLE,
                          Context, evaluate_claim, evaluate_claims, evaluate_premises)
from bench.leaderboard import Row
from bench.suite import ClaimSpec, PremiseSpec

SUITES = Path(__file__).parent / "suites"


def claim(assertion: str, needs=(), name="c", test="welch", tol=None):
    return ClaimSpec.model_validate({"name": name, "paper": "toy", "assert": assertion, "needs": list(needs),
                                     "test": test, "tol": tol})


def premise(assertion: str, name="p"):
    return PremiseSpec.model_validate({"name": name, "assert": assertion})


def row(method: str, **metrics) -> Row:
    n = max(len(v) for v in metrics.values())
    return Row(method, method, False, "h", seeds=list(range(n)), per_seed={k: list(v) for k, v in metrics.items()})


ROWS = [row("base", m=[1.0, 1.1, 0.9], ceil=[0.99, 0.98, 0.99]), row("new", m=[2.0, 2.1, 1.9], ceil=[0.5, 0.6, 0.55])]


class _Suite:  # what evaluate_premises / evaluate_claims read
    def __init__(self, premises, claims):
        self.premises, self.claims = premises, claims


def test_a_failed_premise_turns_a_clear_claim_untestable_and_names_the_premise():
    s = _Suite([premise("ceil(base) < 0.95", "base-below-ceiling")],
               [claim("m(new) > m(base)", ["base-below-ceiling"]), claim("m(new) > m(base)", name="free")])
    prem = evaluate_premises(s, ROWS)
    assert prem[0].state == FAILS  # 0.987 is clearly above 0.95
    v, free = evaluate_claims(s, ROWS, Context(), prem)
    assert free.verdict == SUPPORTED  # the same test without the premise decides
    assert v.statistical_verdict == SUPPORTED and v.verdict == UNTESTABLE
    assert "untestable here: premise base-below-ceiling fails" in v.detail and "ceil(base)=0.9867" in v.detail
    assert v.blocked_by[0]["name"] == "base-below-ceiling" and v.blocked_by[0]["state"] == FAILS


def test_a_premise_that_holds_lets_the_claim_be_decided_and_an_unsettled_one_does_not():
    holds = evaluate_premises(_Suite([premise("ceil(new) < 0.95", "ok")], []), ROWS)
    assert holds[0].state == HOLDS
    assert evaluate_claim(claim("m(new) > m(base)", ["ok"]), ROWS, Context(), holds).verdict == SUPPORTED
    # one seed and no seed-noise model: not established, so the claim is untestable
    one = [row("base", m=[1.0], ceil=[0.9], ceil_stderr=[0.01]), row("new", m=[3.0], m_stderr=[0.01])]
    unsettled = evaluate_premises(_Suite([premise("ceil(base) < 0.95", "ok")], []), one)
    assert unsettled[0].state == UNSETTLED and "no seed-noise model" in unsettled[0].detail
    assert evaluate_claim(claim("m(new) > m(base)", ["ok"]), one, Context(), unsettled).verdict == UNTESTABLE


def test_identical_arms_are_degenerate_not_inconclusive():
    same = [row("a", m=[0.3, 0.2, 0.25], k=[1.0, 2.0, 3.0]), row("b", m=[0.3, 0.2, 0.25], k=[1.0, 2.5, 3.0])]
    v = evaluate_claim(claim("m(a) < m(b)"), same)
    assert v.verdict == DEGENERATE and "the arms are identical" in v.detail and "bit-identical m" in v.detail
    # a conjunction with one degenerate clause is degenerate
    assert evaluate_claim(claim("k(a) < k(b) and m(a) < m(b)"), same).verdict == DEGENERATE
    # equal means but different values: an ordinary (inconclusive) comparison
    close = [row("a", m=[0.3, 0.2, 0.25]), row("b", m=[0.2, 0.3, 0.25])]
    assert evaluate_claim(claim("m(a) < m(b)"), close).verdict == INCONCLUSIVE
    # one seed each, identical: degenerate too (before any seed-noise question)
    assert evaluate_claim(claim("m(a) < m(b)"), [row("a", m=[0.5]), row("b", m=[0.5])]).verdict == DEGENERATE


def test_validate_refuses_a_claim_whose_arms_resolve_to_the_same_config_hash(tmp_path):
    from bench.errors import SuiteError
    from bench.plan import load

    doc = yaml.safe_load((SUITES / "smoke.yaml").read_text())
    doc["methods"].append(dict(doc["methods"][0], name="vq_copy", baseline=False))
    doc["claims"] = [{"name": "copy", "paper": "toy", "assert": "ar_loss(vq_copy) < ar_loss(vq)"}]
    p = tmp_path / "copy.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(SuiteError, match=r"claims\[0\]\.assert: vq and vq_copy resolve to the same config hash"):
        load(p)
    doc["claims"] = [{"name": "x", "paper": "toy", "assert": "ar_loss(vcq) < ar_loss(vq)", "needs": ["nope"]}]
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(SuiteError, match=r"claims\[0\]\.needs: unknown premise\(s\) \['nope'\]"):
        load(p)
    doc["premises"] = [{"name": "nope", "assert": "ar_loss(ghost) < 1"}]
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(SuiteError, match=r"premises\[0\]\.assert: unknown method 'ghost'"):
        load(p)


def test_detectable_difference_and_seeds_needed_with_multi_seed_welch():
    rows = [row("a", m=[1.0, 1.2, 0.8]), row("b", m=[1.1, 1.3, 0.9])]
    v = evaluate_claim(claim("m(a) < m(b)"), rows)
    part = v.parts[0]
    assert v.verdict == INCONCLUSIVE
    assert part["mde"] == pytest.approx((part["ci"][1] - part["ci"][0]) / 2)
    n = part["seeds_needed"]
    assert n is not None and n > 3
    # at that many seeds with the same spread the interval would exclude 0 (and at n - 1 not)
    from bench.stats import t_quantile

    def half(k):
        return t_quantile(0.95, 2 * (k - 1)) * math.sqrt(2 * 0.04 / k)
    assert half(n) < 0.1 <= half(n - 1)


def test_aa_splits_count_and_are_disjoint():
    from bench.aa import splits

    s = splits(6, 2, 1)
    assert len(s) == 30 and all(set(a).isdisjoint(b) for a, b in s)
    s3 = splits(6, 2, 3)
    assert len(s3) == 20 and all(len(a) == 3 and set(a).isdisjoint(b) for a, b in s3)
    assert splits(5, 2, 3) == []
    big = splits(20, 3, 2, cap=50)
    assert len(big) == 50 and len(set(big)) == 50


def test_aa_rate_of_the_old_one_seed_test_is_high_and_with_the_model_it_holds():
    """Simulated method: seed effect sd 2, test-set sampling se 0.5 (logged). The old sampling-only test
    decides most A/A splits; the seed-noise model's test stays near its level."""
    from bench.aa import claim_rate
    from bench import seed_noise

    rng = np.random.default_rng(11)
    n = 12
    vals = list(10 + rng.normal(0, 2, size=n))
    r = Row("base", "base", True, "h", seeds=list(range(n)), per_seed={"m": vals, "m_stderr": [0.5] * n})
    model = seed_noise.build("toy", [r], "toy.json")
    assert model.metrics["m"].sd == pytest.approx(np.std(vals, ddof=1)) and model.metrics["m"].df == n - 1
    ctx = Context(noise=model)
    c = claim("m(x) < m(y)")
    old = claim_rate(c, model, 1, ctx, sampling_only=True)
    new = claim_rate(c, model, 1, ctx)
    assert old.splits == new.splits == n * (n - 1)
    assert old.rate > 0.5 and new.rate <= 0.10
    # a tolerance claim: the A/A expectation is -0.25 mu, not 0 (the CI must cover that)
    tol_rate = claim_rate(claim("m(x) < 1.25 * m(y)"), model, 1, ctx)
    assert tol_rate.rate <= 0.10
    # the multi-seed Welch test at 3 vs 3
    w = claim_rate(c, model, 3, ctx)
    assert w.splits > 0 and w.rate <= 0.15  # a sample of seeds, not a simulation: loose


def test_seed_noise_model_round_trip_staleness_and_refusal(tmp_path):
    from bench import seed_noise
    from bench.errors import BenchError
    from bench.plan import config_hash
    from bench.suite_file import load_suite

    suite = load_suite(SUITES / "smoke.yaml")
    vq = suite.method("vq")
    r = Row("vq", "vq", True, config_hash(suite, vq), seeds=[0, 1, 2],
            per_seed={"ar_loss": [2.0, 2.2, 2.1], "ar_loss_stderr": [0.01] * 3})
    m = seed_noise.build(suite.name, [r], "x")
    p = seed_noise.write(m, tmp_path / "smoke.seed_noise.json")
    back = seed_noise.read(p)
    assert back.metrics["ar_loss"].sd == pytest.approx(0.1) and back.metrics["ar_loss"].sd_rel == pytest.approx(0.1 / 2.1)
    assert back.provenance["git_sha"] and back.values()["ar_loss"] == [2.0, 2.2, 2.1]
    s2 = suite.model_copy(update={"seed_noise": str(p)})
    model, note = seed_noise.load_for(s2)
    assert model is not None and note.startswith("1 seed + seed-noise model (3 seeds of vq)")
    # the suite's vq changed (another codebook size): the model is stale and refused
    changed = s2.model_copy(update={"methods": [vq.model_copy(update={"params": {**vq.params, "codebook_size": 8}}),
                                                *s2.methods[1:]]})
    model, note = seed_noise.load_for(changed)
    assert model is None and "stale seed-noise model" in note and "config hash changed" in note
    with pytest.raises(BenchError, match="at least 3"):
        seed_noise.build(suite.name, [Row("vq", "vq", True, "h", seeds=[0, 1], per_seed={"m": [1.0, 2.0]})], "x")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "nope"}))
    with pytest.raises(BenchError, match="not a seed-noise model"):
        seed_noise.read(bad)


def _store_with_seeds(tmp_path: Path, n: int = 6):
    """A store with n finished seeds of the smoke suite's vq and one of vcq (synthetic values)."""
    from bench.plan import config_hash
    from bench.suite_file import load_suite
    from bench.tracking import TAG, Tracker

    doc = yaml.safe_load((SUITES / "smoke.yaml").read_text())
    doc["name"] = "verdict_toy"
    doc["premises"] = [{"name": "vq-below-3", "assert": "ar_loss(vq) < 3"}]
    doc["claims"] = [{"name": "vcq-lower", "paper": "toy", "assert": "ar_loss(vcq) < ar_loss(vq)", "needs": ["vq-below-3"]}]
    p = tmp_path / "verdict_toy.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    suite = load_suite(p)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tr = Tracker(uri)
    exp = tr.experiment_id(suite.name)
    rng = np.random.default_rng(3)
    for m, seeds in (("vq", range(n)), ("vcq", [0])):
        for s in seeds:
            tags = {f"{TAG}kind": "cell", f"{TAG}method": m, f"{TAG}seed": s,
                    f"{TAG}config_hash": config_hash(suite, suite.method(m))}
            run = tr.start(exp, f"{m}-s{s}", tags)
            tr.log_metrics(run, {"ar_loss": float((2.0 if m == "vq" else 1.0) + rng.normal(0, 0.1)),
                                 "ar_loss_stderr": 0.01})
            tr.end(run, "FINISHED")
    return p, uri


def test_cli_seed_noise_then_aa_then_the_board_uses_the_model(tmp_path, results_dir):
    from click.testing import CliRunner

    from bench.cli import main

    suite_file, uri = _store_with_seeds(tmp_path)
    out = tmp_path / "model.json"
    r = CliRunner().invoke(main, ["seed-noise", str(suite_file), "--no-run", "--tracking-uri", uri, "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "ar_loss" in r.output and out.exists()
    doc = json.loads(out.read_text())
    assert doc["methods"]["vq"]["seeds"] == [0, 1, 2, 3, 4, 5] and doc["metrics"]["ar_loss"]["n"] == 6
    # too few seeds: refused before any work, naming the option
    r = CliRunner().invoke(main, ["seed-noise", str(suite_file), "--no-run", "--seeds", "0,1", "--tracking-uri", uri])
    assert r.exit_code == 2 and "--seeds" in r.output
    # the suite names the model file: aa reads it; the board decides with it
    text = suite_file.read_text() + f"seed_noise: {out}\n"
    suite_file.write_text(text)
    r = CliRunner().invoke(main, ["aa", str(suite_file), "--format", "json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)["claims"][0]["results"]
    assert res["1 seed, sampling only"]["splits"] == 30 and res["1 seed + seed-noise model"]["splits"] == 30
    r = CliRunner().invoke(main, ["aa", str(suite_file), "--source", "store", "--tracking-uri", uri])
    assert r.exit_code == 0 and "vcq-lower" in r.output, r.output
    r = CliRunner().invoke(main, ["claims", str(suite_file), "--tracking-uri", uri])
    assert "premise HOLDS" in r.output and "1 seed + seed-noise model (6 seeds of vq)" in r.output, r.output
    assert "[      SUPPORTED] vcq-lower" in r.output
    r = CliRunner().invoke(main, ["leaderboard", str(suite_file), "--tracking-uri", uri])
    assert r.exit_code == 0 and "premises" in r.output and "SUPPORTED" in r.output, r.output
    # without a model: aa refuses the model source, naming what to do
    suite_file.write_text(text.replace(f"seed_noise: {out}\n", f"seed_noise: {tmp_path / 'absent.json'}\n"))
    r = CliRunner().invoke(main, ["aa", str(suite_file)])
    assert r.exit_code == 2 and "does not exist" in r.output
