"""Uncertainty that holds its nominal level: simulated nulls, known-variance toys, 1-seed claims.

Every simulation is seeded and small (well under a few seconds each).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench import stats
from bench.claim_stats import CONTRADICTED, INCONCLUSIVE, NO_MODEL, ONE_SEED, SUPPORTED, Context
from bench.claims import evaluate_claim
from bench.leaderboard import Row
from bench.suite import ClaimSpec

ALPHA, TOL = 0.05, 0.02  # a test may exceed its nominal 5 % false-positive rate by at most 2 points


def claim(assertion: str, test: str = "welch"):
    return ClaimSpec.model_validate({"name": "c", "paper": "toy", "assert": assertion, "test": test})


def row(method: str, **metrics) -> Row:
    n = max(len(v) for v in metrics.values())
    return Row(method, method, False, "h", seeds=list(range(n)), per_seed={k: list(v) for k, v in metrics.items()})


def _rejects(verdict: str) -> bool:
    return verdict in (SUPPORTED, CONTRADICTED)


def test_welch_3_vs_3_holds_its_level():
    rng = np.random.default_rng(1)
    reps = 1000
    hits = sum(stats.welch_interval([(1.0, a), (-1.0, b)])[3] < ALPHA
               for a, b in (rng.normal(size=(2, 3)) for _ in range(reps)))
    assert hits / reps <= ALPHA + TOL


def test_claim_welch_and_bootstrap_fallback_hold_their_level_at_3_seeds():
    """The claim path as the leaderboard uses it, 3 vs 3 seeds, no difference: a verdict other than
    inconclusive is a false positive. ``bootstrap`` falls back to Welch below 30 seeds."""
    rng = np.random.default_rng(2)
    reps = 600
    for test in ("welch", "bootstrap"):
        c = claim("m(a) < m(b)", test)
        hits = 0
        for _ in range(reps):
            a, b = rng.normal(size=(2, 3))
            hits += _rejects(evaluate_claim(c, [row("a", m=a), row("b", m=b)]).verdict)
        assert hits / reps <= ALPHA + TOL, test


def test_percentile_bootstrap_is_uncalibrated_at_3_seeds_and_calibrated_at_30():
    """Why the claims refuse the bootstrap below BOOTSTRAP_MIN_SEEDS: measured, not assumed."""
    rng = np.random.default_rng(3)

    def fpr(n, reps):
        hits = 0
        for r in range(reps):
            a, b = rng.normal(size=(2, n))
            lo, hi, _ = stats.percentile_bootstrap([a, b], lambda m: m[0] - m[1], 0.95, seed=r, resamples=1000)
            hits += lo > 0 or hi < 0
        return hits / reps

    assert fpr(3, 300) > 0.12  # ~20 % measured: the reason for the guard
    assert fpr(stats.BOOTSTRAP_MIN_SEEDS, 400) <= ALPHA + 0.03  # 400 draws: binomial sd ~1.1 points


def test_permutation_exact_level_and_resolution():
    rng = np.random.default_rng(4)
    reps = 1000
    hits = sum(stats.permutation_p(*rng.normal(size=(2, 5)))[0] < ALPHA for _ in range(reps))
    assert hits / reps <= ALPHA + TOL
    p, count = stats.permutation_p([0.0, 0.1, 0.2], [5.0, 5.1, 5.2])
    assert count == 20 and p == pytest.approx(0.1)  # 3 vs 3 cannot go below 2/20, however clear
    p, count = stats.permutation_p(list(range(8)), [x + 100 for x in range(8)])
    assert count == math.comb(16, 8) and p == pytest.approx(2 / count)


SAMPLING_ONLY = Context(sampling_only=True)  # the old one-seed test: sampling error only


def test_old_one_seed_sampling_test_holds_its_level_only_without_seed_noise():
    """The old one-seed test is calibrated when the values vary only by the sampling error it logs..."""
    rng = np.random.default_rng(5)
    reps, se = 1500, 0.3
    c = claim("m(a) < m(b)")
    hits = 0
    for _ in range(reps):
        a, b = rng.normal(0, se, size=2)
        v = evaluate_claim(c, [row("a", m=[a], m_stderr=[se]), row("b", m=[b], m_stderr=[se])], SAMPLING_ONLY)
        hits += _rejects(v.verdict)
    assert hits / reps <= ALPHA + TOL
    # ... and far from it when training seeds add a between-seed spread of 2x the se (as measured on
    # the default suite's rFD/gFD): the reason one-seed claims need a seed-noise model.
    hits = 0
    for _ in range(reps):
        a, b = rng.normal(0, se, size=2) + rng.normal(0, 2 * se, size=2)
        v = evaluate_claim(c, [row("a", m=[a], m_stderr=[se]), row("b", m=[b], m_stderr=[se])], SAMPLING_ONLY)
        hits += _rejects(v.verdict)
    assert hits / reps > 0.3


def _model(sd: float, n: int, key: str = "m", rel: float | None = None):
    from bench.seed_noise import MetricNoise, SeedNoiseModel

    return SeedNoiseModel("toy", "toy.json", {"a": {"config_hash": "h", "seeds": list(range(n)), "values": {}}},
                          {key: MetricNoise(sd, rel, n, n - 1)})


def test_one_seed_with_seed_noise_model_holds_its_level_under_a_simulated_null():
    """One seed per arm; each value = training-seed effect (sd_seed) + test-set sampling error (se). The
    model's SD is itself estimated from 6 simulated seeds (df 5), as `bench seed-noise` does: the
    Satterthwaite-t interval holds its level. Without a model the same claims are never decided."""
    rng = np.random.default_rng(8)
    reps, se, sd_seed = 1500, 0.3, 0.6
    c = claim("m(a) < m(b)")
    hits = no_model = 0
    for _ in range(reps):
        six = rng.normal(0, sd_seed, size=6) + rng.normal(0, se, size=6) * 0  # the model's seeds share the test set
        ctx = Context(noise=_model(float(np.std(six, ddof=1)), 6))
        a, b = rng.normal(0, sd_seed, size=2) + rng.normal(0, se, size=2)
        rows = [row("a", m=[a], m_stderr=[se]), row("b", m=[b], m_stderr=[se])]
        hits += _rejects(evaluate_claim(c, rows, ctx).verdict)
        no_model += _rejects(evaluate_claim(c, rows).verdict)
    assert hits / reps <= ALPHA + TOL
    assert no_model == 0


def test_one_seed_with_model_clear_difference_supported_and_interval():
    ctx = Context(noise=_model(0.1, 6))
    c = claim("m(a) < m(b)")
    clear = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[2.0], m_stderr=[0.05])], ctx)
    assert clear.verdict == SUPPORTED and clear.basis.startswith("1 seed + seed-noise model (6 seeds")
    # SE^2 = 2 (0.05^2 + 0.1^2); both arms' seed variance comes from the ONE model estimate (df 5), so
    # it is one Satterthwaite component: df = (2 * 0.0125)^2 / ((2 * 0.01)^2 / 5) = 7.8
    se = math.sqrt(2 * (0.05 ** 2 + 0.1 ** 2))
    df = (2 * 0.0125) ** 2 / ((2 * 0.01) ** 2 / 5)
    lo, hi = clear.parts[0]["ci"]
    from scipy import stats as st
    assert (hi - lo) / 2 == pytest.approx(st.t.ppf(0.975, df) * se, rel=1e-6)
    assert clear.parts[0]["mde"] == pytest.approx((hi - lo) / 2)
    near = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[1.3], m_stderr=[0.05])], ctx)
    assert near.verdict == INCONCLUSIVE and near.parts[0]["seeds_needed"] > 1
    assert "seeds per arm would detect" in near.detail
    # 0.1 is below what the sampling error alone allows (t * sqrt(2) * 0.05 > 0.1): no seed count helps
    tiny = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[1.1], m_stderr=[0.05])], ctx)
    assert tiny.verdict == INCONCLUSIVE and tiny.parts[0]["seeds_needed"] is None
    assert "no seed count up to 1000" in tiny.detail
    # a relative SD is applied to the method's own value when it is the larger
    big = Context(noise=_model(0.01, 6, rel=0.5))
    v = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[2.0], m_stderr=[0.05])], big)
    assert v.verdict == INCONCLUSIVE


def test_one_seed_clear_difference_supported_null_inconclusive():
    c = claim("m(a) < m(b)")
    clear = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[2.0], m_stderr=[0.05])], SAMPLING_ONLY)
    assert clear.verdict == SUPPORTED and clear.basis == ONE_SEED and ONE_SEED in clear.detail
    null = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[1.02], m_stderr=[0.05])], SAMPLING_ONLY)
    assert null.verdict == INCONCLUSIVE and null.basis == ONE_SEED
    wrong = evaluate_claim(claim("m(b) < m(a)"), [row("a", m=[1.0], m_stderr=[0.05]),
                                                   row("b", m=[2.0], m_stderr=[0.05])], SAMPLING_ONLY)
    assert wrong.verdict == CONTRADICTED
    # without a seed-noise model (the default) a one-seed claim is never decided
    v = evaluate_claim(c, [row("a", m=[1.0], m_stderr=[0.05]), row("b", m=[2.0], m_stderr=[0.05])])
    assert v.verdict == INCONCLUSIVE and v.basis == NO_MODEL and "no seed-noise model" in v.detail
    # z interval of the difference: 1.0 ± 1.96 * sqrt(2) * 0.05
    lo, hi = clear.parts[0]["ci"]
    assert (hi - lo) / 2 == pytest.approx(1.959964 * math.sqrt(2) * 0.05, rel=1e-5)


def test_estimate_known_variance_toy():
    """Items with sd 2: the sampling se of a mean of n items is 2/sqrt(n); seeds add their spread."""
    rng = np.random.default_rng(6)
    n = 400
    items = rng.normal(10, 2, size=n)
    se = items.std(ddof=1) / math.sqrt(n)
    assert se == pytest.approx(2 / math.sqrt(n), rel=0.1)
    e1 = stats.estimate([items.mean()], [se])
    assert e1.source == stats.SAMPLING and e1.se == pytest.approx(se)
    lo, hi = e1.ci()
    assert (hi - lo) / 2 == pytest.approx(1.959964 * se, rel=1e-5)
    e2 = stats.estimate([1.0, 2.0, 3.0], [0.1, 0.1, 0.1])
    assert e2.source == stats.BOTH and e2.se == pytest.approx(math.sqrt(1.0 / 3 + 0.01))
    e3 = stats.estimate([1.0, 2.0, 3.0])
    assert e3.source == stats.SEED_SPREAD and e3.se == pytest.approx(math.sqrt(1 / 3))
    none = stats.estimate([1.0])
    assert none.se is None and none.ci() is None and none.source is None  # missing, never 0


def test_ar_loss_stderr_matches_the_spread_of_repeated_test_sets():
    """ar_loss's stderr over test images vs the actual sd of ar_loss over independent test sets."""
    from types import SimpleNamespace

    import torch

    from bench.metrics.ar_loss import ARLoss, ARLossParams

    rng = np.random.default_rng(7)

    class Adapter:
        registry_name = "toy"

        def nll(self, images, labels):
            per = torch.from_numpy(rng.gamma(2.0, 1.0, size=(len(images), 6)))  # nats, sd sqrt(2)/position
            return SimpleNamespace(per_position=per, per_sequence=per.sum(1))

    def run():
        ds = SimpleNamespace(test=SimpleNamespace(head=lambda n: _Split(300)))
        ctx = SimpleNamespace(dataset=ds, log_metric=lambda *a: None, log_param=lambda *a: None)
        return ARLoss().compute(Adapter(), ctx, ARLossParams())

    outs = [run() for _ in range(60)]
    empirical = np.std([o["ar_loss"] for o in outs], ddof=1)
    reported = np.mean([o["ar_loss_stderr"] for o in outs])
    assert reported == pytest.approx(math.sqrt(2 / 6 / 300), rel=0.1)  # var of a 6-position mean of gamma(2)
    assert 0.7 < empirical / reported < 1.3


class _Split:
    def __init__(self, n):
        import torch

        self.images, self.labels = torch.zeros(n, 1, 2, 2), torch.zeros(n)

    def __len__(self):
        return len(self.images)


def test_fd_bootstrap_stderr_matches_redraws():
    """The bootstrap se of FD vs the sd of FD over independent draws of both image sets (8-d Gaussians)."""
    from bench.metrics.frechet import frechet_bootstrap_stderr, frechet_distance

    rng = np.random.default_rng(8)
    draw = lambda: (rng.normal(0, 1, (300, 8)), rng.normal(0.3, 1.2, (300, 8)))  # noqa: E731
    fds = [frechet_distance(*draw()) for _ in range(30)]
    ses = [frechet_bootstrap_stderr(*draw(), resamples=50, seed=i) for i in range(3)]
    assert 0.6 < np.mean(ses) / np.std(fds, ddof=1) < 1.7
    a, b = draw()
    assert frechet_bootstrap_stderr(a, b, 50, seed=3) == frechet_bootstrap_stderr(a, b, 50, seed=3)  # seeded
    assert frechet_bootstrap_stderr(a, b, 0, seed=3) is None


def test_binomial_stderr_and_lm_eval_na_is_missing():
    from adapters.peft.evaluate import _pick, pooled
    from bench.metrics.probe import binomial_stderr

    assert binomial_stderr(0.8, 100) == pytest.approx(0.04)
    key, v, se = _pick({"acc,none": 0.5, "acc_stderr,none": "N/A"}, None)
    assert v == 0.5 and se is None
    assert pooled({"a": {"value": 0.5, "stderr": None}, "b": {"value": 0.7, "stderr": 0.1}}) == (0.6, None)
    assert pooled({"a": {"value": 0.5, "stderr": 0.1}, "b": {"value": 0.7, "stderr": 0.1}})[1] == pytest.approx(
        math.sqrt(0.02) / 2)


def test_descriptive_columns_have_no_arrow_and_gate_two_sided():
    from bench.compare import CHANGED, OK, judge
    from bench.metrics.base import Column
    from bench.metrics.entropy import EntropyParams, PositionEntropy

    cols = PositionEntropy.columns(EntropyParams())
    assert all(c.descriptive and c.arrow == "" and c.group == "descriptive" for c in cols.values())
    with pytest.raises(ValueError):
        Column("x", True, kind="descriptive")
    assert judge(3.0, 4.0, "none", 0.5) == CHANGED and judge(3.0, 2.0, "none", 0.5) == CHANGED
    assert judge(3.0, 3.2, "none", 0.5) == OK


def test_claim_can_choose_the_permutation_test_and_it_holds_its_level():
    """``test: permutation``: used (named in the detail), exact level under a simulated 5 vs 5 null,
    verdicts on clear differences, no verdict where the seeds cannot reach the level (3 vs 3)."""
    rng = np.random.default_rng(11)
    c = claim("m(a) < m(b)", "permutation")
    reps, hits = 400, 0
    for _ in range(reps):
        a, b = rng.normal(size=(2, 5))
        v = evaluate_claim(c, [row("a", m=a), row("b", m=b)])
        hits += _rejects(v.verdict)
    assert "permutation p=" in v.detail and "252 relabellings" in v.detail and v.test == "permutation"
    assert hits / reps <= ALPHA + TOL
    lo, hi = [0.0, 0.1, 0.2, 0.3, 0.4], [5.0, 5.1, 5.2, 5.3, 5.4]
    assert evaluate_claim(c, [row("a", m=lo), row("b", m=hi)]).verdict == SUPPORTED
    assert evaluate_claim(c, [row("a", m=hi), row("b", m=lo)]).verdict == CONTRADICTED
    # a constant shifts one side: m(a) + 10 < m(b) is false for these values (a + 10 lies above b)
    assert evaluate_claim(claim("m(a) + 10 < m(b)", "permutation"), [row("a", m=lo), row("b", m=hi)]).verdict \
        == CONTRADICTED
    v3 = evaluate_claim(c, [row("a", m=lo[:3]), row("b", m=hi[:3])])  # 20 relabellings: p >= 0.1
    assert v3.verdict == INCONCLUSIVE and "smallest attainable p is 0.1" in v3.detail
    # welch on the same 3 vs 3 seeds does give a verdict: the choice of test matters
    assert evaluate_claim(claim("m(a) < m(b)"), [row("a", m=lo[:3]), row("b", m=hi[:3])]).verdict == SUPPORTED


def test_permutation_claim_validation_names_the_field(tmp_path):
    from bench.errors import SuiteError
    from bench.suite_file import load_suite
    from conftest import SUITES

    import yaml

    doc = yaml.safe_load((SUITES / "smoke.yaml").read_text())
    m = [x["name"] for x in doc["methods"]][:2]
    doc["claims"] = [{"name": "ok", "paper": "p", "assert": f"ar_loss({m[0]}) < ar_loss({m[1]})", "test": "permutation"},
                     {"name": "eq", "paper": "p", "assert": f"|ar_loss({m[0]}) - ar_loss({m[1]})| <= 0.1",
                      "test": "permutation"}]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    msg = str(e.value)
    assert "claims[1].test: the permutation test compares two metric values" in msg and "claims[0]" not in msg
    assert f"ar_loss({m[0]})" in msg and "__ref" not in msg
    doc["claims"] = doc["claims"][:1]
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_suite(p).claims[0].test == "permutation"


def test_lm_accuracy_metric_omits_the_stderr_when_a_task_has_na(monkeypatch):
    """The metric itself (lm-eval faked): a task whose stderr is "N/A" -> no accuracy_stderr logged, never 0.0;
    all tasks with stderrs -> the pooled one."""
    from types import SimpleNamespace

    import adapters.peft.evaluate as ev
    from bench.metrics.lm_accuracy import LmAccuracy

    raw = {"t1": {"acc,none": 0.5, "acc_stderr,none": "N/A"}, "t2": {"acc,none": 0.7, "acc_stderr,none": 0.1}}

    def fake(model, tok, tasks, *a, **k):
        return {t: dict(zip(("metric", "value", "stderr"), ev._pick(raw[t], None)), n=10) for t in tasks}

    monkeypatch.setattr(ev, "lm_eval_accuracy", fake)
    logged = {}
    ctx = SimpleNamespace(dataset=SimpleNamespace(tasks=["t1", "t2"], include_path=None, include_defaults=True,
                                                  test=SimpleNamespace(limit=None)),
                          budget={}, device=SimpleNamespace(type="cpu"), log_param=lambda k, v: None,
                          log_metric=lambda k, v, step=None: logged.__setitem__(k, v))
    adapter = SimpleNamespace(result=SimpleNamespace(model=None), tokenizer=None)
    m = LmAccuracy()
    out = m.compute(adapter, ctx, m.Params())
    assert out == {"accuracy": pytest.approx(0.6)} and logged == {"acc_t1": 0.5, "acc_t2": 0.7}
    raw["t1"]["acc_stderr,none"] = 0.1
    out = m.compute(adapter, ctx, m.Params())
    assert out["accuracy_stderr"] == pytest.approx(math.sqrt(0.02) / 2)
