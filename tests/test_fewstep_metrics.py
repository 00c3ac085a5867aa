"""Few-step reward metrics: the noise bank (seeded, balanced, prefix-stable, the same for every method and
NFE), bank controls, and reward_nfe / fewstep_quality / control_error on a toy sampler, end to end."""
from types import SimpleNamespace

import pytest
import torch

import fewstep_toy  # noqa: F401  (registers test-fewstep)
from bench import inputs as inp
from bench.metrics.fewstep import BANK_SEED, bank_controls, lowres7, noise_bank

from conftest import SUITES


def test_noise_bank_is_seeded_balanced_prefix_stable_and_its_own_stream():
    z, labels = noise_bank(300, (1, 28, 28), 10)
    assert z.dtype == torch.float32 and z.shape == (300, 1, 28, 28) and labels.dtype == torch.int64
    z2, l2 = noise_bank(70, (1, 28, 28), 10)
    assert torch.equal(z[:70], z2) and torch.equal(labels[:70], l2)  # row i depends on (seed, i) only
    assert torch.equal(noise_bank(300, (1, 28, 28), 10)[0], z)
    assert torch.bincount(labels[:95], minlength=10).tolist() == [10] * 5 + [9] * 5  # every prefix balanced
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert not torch.equal(noise_bank(300, (1, 28, 28), 10, seed=BANK_SEED + 1)[0], z)
    for s in (0, BANK_SEED):  # not the stream training draws from
        torch.manual_seed(s)
        assert not torch.allclose(torch.randn(300, 1, 28, 28), z)
    with pytest.raises(ValueError):
        noise_bank(0, (4,), 10)


def _ctx(ds, method="m"):
    logged = {}
    return SimpleNamespace(dataset=ds, method=SimpleNamespace(name=method), seed=0, suite=None, inputs=None,
                           artifact_dir=None, progress=False, log_param=lambda k, v: logged.__setitem__(k, v),
                           log_metric=lambda k, v, s=None: logged.__setitem__((k, s), v), logged=logged)


@pytest.fixture(scope="module")
def tiny():
    from bench.data.base import ImageDataset
    from bench.data.fmnist import fmnist_dir, load_split

    root = fmnist_dir(None)
    return ImageDataset("fmnist", load_split(root, "train").head(600), load_split(root, "test").head(300), 10, 1, 28,
                        str(root))


def test_the_same_bank_for_every_method_and_nfe_and_controls_are_real_and_independent(tiny):
    from bench.metrics.fewstep_quality import ControlError, ControlParams
    from bench.metrics.reward_nfe import RewardAtNFE, RewardNFEParams
    from fewstep_toy import ToyFewStep, ToyParams

    methods = []
    for params in (ToyParams(rate=0.3), ToyParams(rate=0.9, controlled=True)):
        a = ToyFewStep(params, seed=0)
        ctx = _ctx(tiny)
        a.prepare(ctx)
        RewardAtNFE().compute(a, ctx, RewardNFEParams(reward="components", n=40, steps=[1, 3]))
        ControlError().compute(a, ctx, ControlParams(n=40, drift=False))
        methods.append(a)
    calls = [[(z, l, s) for z, l, s in a.calls] for a in methods]
    assert [s for _, _, s in calls[0]] == [1, 3]  # uncontrolled: the control bank is its plain bank at 1 step
    assert [s for _, _, s in calls[1]] == [1, 3, 1]  # controlled: drawn again with the controls
    for (z0, l0, _), (z1, l1, _) in zip(calls[0] + calls[0][:1], calls[1]):  # paired: same noises and classes
        assert torch.equal(z0, z1) and torch.equal(l0, l1)
        assert torch.equal(z0, noise_bank(40, (1, 28, 28), 10)[0])
    c = bank_controls("lowres7", tiny.test, torch.tensor([3, 3, 7]))
    first3, first7 = (torch.nonzero(tiny.test.labels == k).flatten() for k in (3, 7))
    assert torch.equal(c.value, lowres7(tiny.test.images[torch.stack([first3[0], first3[1], first7[0]])]))


@pytest.mark.slow
def test_fewstep_suite_on_a_toy_sampler_end_to_end(tracking_uri, cache, results_dir):
    from bench import leaderboard
    from bench.runner import run_suite
    from bench.suite_file import load_suite
    from bench.tracking import Tracker

    suite = load_suite(SUITES / "fewstep_toy.yaml")
    outcomes, _ = run_suite(suite, tracking_uri=tracking_uri, cache=cache, progress=False)
    assert [o.status for o in outcomes] == ["finished"] * 4, [o.error for o in outcomes]
    by = {o.method: o.metrics for o in outcomes}
    for name in ("base", "tuned", "ctl"):
        m = by[name]
        assert [m[f"nfe_steps{s}"] for s in (1, 2, 4)] == [1.0, 2.0, 4.0]  # measured, not declared
        fd = [m[f"fd_bank_nfe{s}"] for s in (1, 2, 4)]
        assert fd == sorted(fd, reverse=True)  # the toy converges to real images
        assert 0 <= m["reward_judge_nfe1"] <= m["reward_judge_nfe4"] <= 1
        assert {f"reward_judge_ood_nfe{s}" for s in (1, 2, 4)} <= set(m)
    assert not any(k.endswith(("nfe1", "nfe2")) and k.startswith("reward") for k in by["teacher"])
    assert {"reward_judge_nfe16", "fd_bank_nfe16", "nfe_steps16"} <= set(by["teacher"])
    assert by["teacher"]["reward_judge_nfe16"] > by["teacher"]["reward_judge_nfe4"]
    # tuned and ctl are the same generator at rate 0.6: paired bank, identical rewards
    assert by["tuned"]["reward_judge_nfe2"] == by["ctl"]["reward_judge_nfe2"]
    assert by["tuned"]["reward_judge_nfe2"] > by["base"]["reward_judge_nfe2"]
    assert "drift_fd_nfe1" not in by["base"] and by["tuned"]["drift_fd_nfe1"] > 0
    assert abs(by["ctl"]["drift_fd_nfe1"]) < 1e-6  # its drift reference is itself at 1 step
    assert by["ctl"]["control_err_nfe1"] < 0.1 * by["base"]["control_err_nfe1"]  # controlled vs uncontrolled
    assert by["ctl"]["control_err_base_nfe1"] < 0.1 * by["base"]["control_err_base_nfe1"]  # base-sample controls
    assert by["base"]["control_fd_base_nfe1"] > 0  # distributional: vs its own images of other noises, not 0 by pairing
    assert 0 < by["base"]["diversity_real"] < 0.5
    assert 0 < by["base"]["fd_real_floor"] == by["teacher"]["fd_real_floor"]  # real vs real: the same for all
    assert 0 < by["base"]["reward_judge_real"] == by["tuned"]["reward_judge_real"] <= 1

    tr = Tracker(tracking_uri)
    board = leaderboard.build(suite, tr)
    assert board.columns["reward_judge_nfe4"].title == "reward judge (in-domain, bank n=100, NFE=4)"
    assert board.columns["reward_judge_ood_nfe4"].title == "reward judge_ood (out-of-domain, bank n=100, NFE=4)"
    # one seed and no seed-noise model: the clear in-domain gain is not decided, and the board says why
    assert board.claims[0].verdict == "inconclusive" and board.claims[0].basis == "1 seed: no seed-noise model"
    from bench.claims import Context, evaluate_claims

    old = evaluate_claims(suite, board.methods, Context(sampling_only=True), board.premises)
    assert old[0].verdict == "supported"  # what the sampling-only test said
    run = tr.client.get_run(next(o.run_id for o in outcomes if o.method == "tuned")).data
    assert run.params["reward_nfe.judge.instrument"] == "fmnist-rjudge-cnn-v1"
    assert run.metrics["reward_judge_nfe4_ci95_lo"] <= by["tuned"]["reward_judge_nfe4"] <= run.metrics["reward_judge_nfe4_ci95_hi"]
    paths = leaderboard.write(board, results_dir / "fewstep_toy")
    for fig in ("reward_vs_nfe.png", "reward_vs_quality.png", "quality_vs_nfe.png"):
        assert (results_dir / "fewstep_toy" / fig).stat().st_size > 0
        assert fig in paths["html"].read_text()


def test_pareto_front():
    from bench.fewstep_plots import pareto_front

    pts = [(10.0, 0.5), (20.0, 0.9), (15.0, 0.4), (5.0, 0.1), (20.0, 0.8)]
    assert pareto_front(pts) == [(5.0, 0.1), (10.0, 0.5), (20.0, 0.9)]
    assert pareto_front(pts, higher_is_better=False) == [(5.0, 0.1)]


def test_independent_bank_has_other_noises_and_the_same_labels():
    from bench.metrics.fewstep import INDEP_BANK_SEED

    (z, y), (z2, y2) = noise_bank(30, (1, 28, 28), 10), noise_bank(30, (1, 28, 28), 10, INDEP_BANK_SEED)
    assert torch.equal(y, y2) and not torch.allclose(z, z2)
    assert inp.bank(10, 1, "lowres7", "base").pool() != inp.bank(10, 1, "lowres7").pool()
    assert inp.bank(10, 1, None, "base").pool() == inp.bank(10, 1).pool()  # no control: no source
    assert inp.bank_base_indep(5, 1).pool() != inp.bank_base(5).pool()


def test_bank_inputs_are_pooled_per_steps_and_control():
    assert inp.bank(10, 4).pool() == ("bank", 4, None) != inp.bank(10, 4, "lowres7").pool()
    assert inp.bank(10, 4).pool() == inp.bank(99, 4).pool() and inp.bank_base(5).pool() == ("bank_base", None)


def test_reward_error_bars_stop_at_the_rewards_range():
    from bench.fewstep_plots import clipped_errors

    pts = [(1, 1.0, 0.9, 0.3), (2, 2.0, 0.5, 0.2), (4, 4.0, 0.05, 0.4)]
    assert clipped_errors(pts, 0.0, 1.0) == [[0.3, 0.2, 0.05], [pytest.approx(0.1), 0.2, 0.4]]
    assert clipped_errors(pts, float("-inf"), float("inf")) == [[0.3, 0.2, 0.4], [0.3, 0.2, 0.4]]
