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
