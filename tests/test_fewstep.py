"""Few-step family (adapters/fewstep): measured NFE = generator calls, seeded reproducibility, the
zero-initialised NCT adapter equals its base, TDM-R1 at reward weight 0 makes TDM's update, NCT
reads no training image, rewards see detached uint8 images. Tiny nets, a few steps."""
from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from adapters.fewstep import flow
from adapters.fewstep.net import ControlAdapter, VelocityNet
from adapters.fewstep.nct import NCTAdapter, controlled, training_images_forbidden
from adapters.fewstep.params import FewStepBudget, NCTParams, TDMParams, TDMR1Params, TeacherParams
from adapters.fewstep.tdm import TDMAdapter, TDMState, draw_batch, tdm_step
from adapters.fewstep.tdm_r1 import R1Hooks, TDMR1Adapter
from adapters.fewstep.teacher import TeacherAdapter
from bench.adapter import Conditioning, NFEMeter
from bench.context import Cache
from bench.metrics.fewstep import Control
from tiny_images import tiny_dataset

TINY = {"width": 16, "depth": 1}
BUDGET = {"teacher_steps": 2, "teacher_batch": 16, "tdm_steps": 1, "tdm_batch": 8, "r1_epochs": 1, "r1_groups": 2,
          "r1_group_size": 4, "nct_steps": 2, "nct_batch": 8}


def brightness_reward(images, labels):
    assert images.dtype == torch.uint8 and not images.requires_grad  # rewards see detached uint8 only
    return images.double().mean((1, 2, 3)) / 255


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    d = tmp_path_factory.mktemp("fewstep")
    return SimpleNamespace(dataset=tiny_dataset(64, 16), budget=BUDGET, cache=Cache(Path(d) / "cache"),
                           artifact_dir=Path(d) / "art", progress=False, log_param=lambda k, v: None,
                           log_metric=lambda k, v, s=None: None)


def prepared(cls, params, ctx, **attrs):
    a = cls(params, seed=0)
    for k, v in attrs.items():
        setattr(a, k, v)
    a.prepare(ctx)
    return a


def test_measured_nfe_counts_every_network_call(ctx, monkeypatch):
    forwarded = []
    real = VelocityNet.forward
    monkeypatch.setattr(VelocityNet, "forward", lambda self, x, *a, **k: forwarded.append(len(x)) or real(self, x, *a, **k))
    cases = [(prepared(TeacherAdapter, TeacherParams(**TINY), ctx), 5, 5),
             (prepared(TeacherAdapter, TeacherParams(**TINY, cfg_scale=2.0), ctx), 3, 6),  # CFG: 2 per step
             (prepared(TDMAdapter, TDMParams(**TINY), ctx), 2, 2),
             (prepared(TDMR1Adapter, TDMR1Params(**TINY, best_of_n=3), ctx, reward_fn=brightness_reward), 2, 6),
             (prepared(NCTAdapter, NCTParams(**TINY), ctx), 1, 1)]
    y = torch.arange(6) % 4
    for a, steps, nfe in cases:
        forwarded.clear()
        with NFEMeter() as m:
            x = a.sample_from_noise(torch.randn(6, 1, 28, 28), Conditioning(y), steps,
                                    Control("lowres7", torch.rand(6, 1, 7, 7)) if a.controls else None)
        assert x.dtype == torch.uint8 and x.shape == (6, 1, 28, 28)
        assert m.per_image(6) == nfe, (a.registry_name, m.per_image(6), nfe)
        assert m.evaluations == sum(forwarded), (a.registry_name, m.evaluations, forwarded)


def test_fixed_seed_reproduces_samples(ctx):
    a = prepared(TDMAdapter, TDMParams(**TINY), ctx)
    y = Conditioning(torch.arange(5) % 4)
    s1, s2, s3 = a.sample(5, y, 4, seed=3), a.sample(5, y, 4, seed=3), a.sample(5, y, 4, seed=4)
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)


def test_zero_initialised_nct_adapter_reproduces_the_base_exactly():
    torch.manual_seed(0)
    G = VelocityNet(4, 16, 2).eval()
    with torch.no_grad():  # a non-trivial base, and an adapter whose hidden layers are not zero
        for p in G.parameters():
            p.add_(0.1 * torch.randn_like(p))
    A = ControlAdapter(16, 2, 8)
    z, y, c = torch.randn(7, 1, 28, 28), torch.arange(7) % 4, torch.rand(7, 1, 7, 7)
    with torch.no_grad():
        base = flow.euler(G, z, y, 1, 3.0)
        assert torch.equal(controlled(G, A, z, c, y, 1, 3.0), base)
        A.zero[0].bias.add_(1e-3)  # the test can fail: a non-zero connection changes the output
        assert not torch.equal(controlled(G, A, z, c, y, 1, 3.0), base)


def test_untrained_nct_equals_its_base_generator(ctx):
    a = prepared(NCTAdapter, NCTParams(**TINY, variant="none"), ctx)
    base, steps = a.drift_reference()
    z, y = torch.randn(6, 1, 28, 28), Conditioning(torch.arange(6) % 4)
    ctl = Control("lowres7", torch.rand(6, 1, 7, 7))
    assert torch.equal(a.sample_from_noise(z, y, steps, ctl), base.sample_from_noise(z, y, steps))


def _tdm_state(seed=0):
    torch.manual_seed(seed)
    ref = VelocityNet(4, 16, 1).eval().requires_grad_(False)
    return TDMState.start(ref, ref, FewStepBudget(), seed=5)


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_tdm_r1_at_reward_weight_zero_makes_tdms_update(weight):
    p_tdm, p_r1 = TDMParams(**TINY), TDMR1Params(**TINY, reward_weight=weight)
    z, y = draw_batch(8, 4, 4, torch.Generator().manual_seed(1))
    a, b = _tdm_state(), _tdm_state()
    tdm_step(a, p_tdm, z, y)
    R = copy.deepcopy(b.ref).requires_grad_(True)
    from bench.training import Update
    hooks = R1Hooks(p_r1, R, b.ref, Update(torch.optim.Adam(R.parameters(), lr=1e-2)), brightness_reward, 4,
                    torch.Generator().manual_seed(2))
    parts = tdm_step(b, p_r1, z, y, hooks)
    assert "reward" in parts
    same = all(torch.equal(pa, pb) for pa, pb in zip(a.G.parameters(), b.G.parameters()))
    assert same == (weight == 0.0)  # with a reward term the update differs (so this test can fail)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.F.parameters(), b.F.parameters()))


def test_nct_reads_no_training_image(ctx):
    with training_images_forbidden(ctx.dataset):
        with pytest.raises(AssertionError, match="training images"):
            ctx.dataset.train.images
    assert len(ctx.dataset.train) == 64  # restored
    a = prepared(NCTAdapter, NCTParams(**TINY, variant="nct", lambda0=0.5), ctx)  # trains under the guard
    assert a.records["nct"]["steps"] == 2 and len(ctx.dataset.train) == 64


def test_tdm_r1_trains_on_the_reward_and_caches(ctx):
    a = prepared(TDMR1Adapter, TDMR1Params(**TINY), ctx, reward_fn=brightness_reward)
    b = prepared(TDMR1Adapter, TDMR1Params(**TINY), ctx, reward_fn=brightness_reward)
    assert a.records["tdm_r1"]["cached"] is False and b.records["tdm_r1"]["cached"] is True
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    ref, steps = a.drift_reference()
    assert steps == 4 and ref.registry_name == "tdm"


def test_params_reject_unknown_and_best_of_one():
    with pytest.raises(ValueError):
        TDMR1Params(best_of_n=1)
    with pytest.raises(ValueError):
        NCTParams(variant="nct", unknown=1)


def test_state_velocity_target_is_the_score_of_the_renoising_kernel():
    """Independent reference: the score of q(x_tau | y) = N(a y, b^2 I) by autograd of its log-density,
    turned into a velocity by x0 = (x_tau + tau^2 score) / (1 - tau), v = (x_tau - x0) / tau."""
    g = torch.Generator().manual_seed(0)
    y, eps = torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)
    for s_y in (0.0, 0.5, 0.9):
        tau = torch.tensor([s_y + 0.02, (1 + s_y) / 2, 0.99])  # every tau above s_y
        a, b = flow.renoise_coefs(s_y, tau)
        x_tau = (a * y + b * eps).requires_grad_(True)
        logq = (-(x_tau - a * y).pow(2) / (2 * b ** 2)).sum()
        score, = torch.autograd.grad(logq, x_tau)
        t4 = tau.view(-1, 1, 1, 1)
        x0 = (x_tau.detach() + t4 ** 2 * score) / (1 - t4)
        ref = (x_tau.detach() - x0) / t4
        got = flow.state_velocity_target(y, s_y, tau, eps)
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), s_y
    assert torch.allclose(flow.state_velocity_target(y, 0.0, tau, eps), eps - y, atol=1e-5)  # s_y = 0: eps - x0


def test_tdm_generator_renoises_above_dm_t_min(monkeypatch):
    """tau of D_kl/D_cfg lies above max(s_{j+1}, dm_t_min); the fake score's tau is not floored."""
    seen = []
    real = flow.renoise
    monkeypatch.setattr(flow, "renoise", lambda x, s_from, s_to, eps: seen.append((s_from, s_to.clone())) or
                        real(x, s_from, s_to, eps))
    for t_min in (0.0, 0.7):
        st, seen[:] = _tdm_state(), []
        z, y = draw_batch(16, 1, 4, torch.Generator().manual_seed(1))
        for _ in range(6):
            tdm_step(st, TDMParams(**TINY, dm_t_min=t_min), z, y)
        fake_taus = torch.cat([t for i, (_, t) in enumerate(seen) if i % 2 == 0])
        gen = [(s, t) for i, (s, t) in enumerate(seen) if i % 2 == 1]
        assert all(bool((t > max(s, t_min)).all()) for s, t in gen)
        if t_min:
            assert float(fake_taus.min()) < t_min  # only the generator's levels are floored (test can fail)


@pytest.mark.parametrize("target", ["x0_hat", "state"])
def test_fake_targets_agree_on_the_final_step_only(target, monkeypatch):
    """At the last step (s_{j+1} = 0) the two fake-score targets are the same regression; at an earlier
    step they differ, so fake_target changes the update."""
    def run(ft, j):
        monkeypatch.setattr(torch, "randint", _fixed_first_randint(j))
        st = _tdm_state()
        z, y = draw_batch(8, 1, 4, torch.Generator().manual_seed(1))
        tdm_step(st, TDMParams(**TINY, fake_target=ft), z, y)
        monkeypatch.undo()
        return torch.cat([p.flatten() for p in st.F.parameters()])
    other = "state" if target == "x0_hat" else "x0_hat"
    assert torch.allclose(run(target, 3), run(other, 3), atol=1e-6)
    assert not torch.allclose(run(target, 0), run(other, 0), atol=1e-6)


def _fixed_first_randint(j):
    real = torch.randint

    def randint(*args, **kw):
        if args[:2] == (0, 4) and args[2] == (1,):
            return torch.tensor([j])
        return real(*args, **kw)
    return randint


def test_nct_adapter_output_skip_is_zero_initialised_and_trainable():
    torch.manual_seed(0)
    G = VelocityNet(4, 16, 2).eval().requires_grad_(False)
    A = ControlAdapter(16, 2, 8, output_skip=True)
    z, y, c = torch.randn(3, 1, 28, 28), torch.arange(3), torch.rand(3, 1, 7, 7)
    assert len(A(c, z)) == 3
    assert torch.equal(controlled(G, A, z, c, y, 1, 3.0), flow.euler(G, z, y, 1, 3.0))
    A.zero[-1].bias.data.fill_(0.1)  # the output term reaches the image directly
    assert not torch.equal(controlled(G, A, z, c, y, 1, 3.0), flow.euler(G, z, y, 1, 3.0))


def test_reward_band_must_lie_inside_the_distribution_matching_band():
    with pytest.raises(ValueError, match="inside the distribution-matching band"):
        TDMR1Params(dm_t_min=0.6, t_min_generator=0.4)
    TDMR1Params(dm_t_min=0.6, t_min_generator=0.4, reward_weight=0.0)  # no reward direction: no band
    TDMR1Params(dm_t_min=0.0, t_min_generator=0.4)


def _surrogate_step(ppo_clip, trust_region, steps=3):
    """(detached fraction of the last surrogate update, R after ``steps`` updates) on one fixed batch."""
    from bench.training import Update

    torch.manual_seed(0)
    ref = VelocityNet(4, 16, 1).eval().requires_grad_(False)
    R = copy.deepcopy(ref).requires_grad_(True)
    p = TDMR1Params(**TINY, ppo_clip=ppo_clip, trust_region=trust_region)
    hooks = R1Hooks(p, R, ref, Update(torch.optim.Adam(R.parameters(), lr=5e-2)), brightness_reward, 4,
                    torch.Generator().manual_seed(2))
    z, y = draw_batch(8, 4, 4, torch.Generator().manual_seed(1))
    states = flow.rollout(ref, z, y, flow.grid(4, 3.0))
    for _ in range(steps):
        parts = hooks.after_fake(states, y)
    return parts["surrogate_detached"], R


def test_surrogate_guards_detach_samples_and_change_the_update():
    free, R_free = _surrogate_step(0.0, 0.0)
    assert free == 0.0
    clipped, R_clip = _surrogate_step(1e-6, 0.0)  # a tight PPO clip detaches moving samples
    trusted, R_trust = _surrogate_step(0.0, 1e-9)  # a tiny trust region detaches those moving with A
    assert clipped > 0 and trusted > 0
    for R in (R_clip, R_trust):
        assert not all(torch.equal(a, b) for a, b in zip(R.parameters(), R_free.parameters()))
