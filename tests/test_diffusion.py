"""Discrete-diffusion family (adapters/diffusion): forward process, reverse kernel, VADD vs MDM loss,
seeded sampling, measured NFE, and the IW estimate vs the bound on an exactly computable toy."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adapters.diffusion import process
from adapters.diffusion.mdm import MDMAdapter, MDMParams
from adapters.diffusion.model import Denoiser, NetConfig, Recognition, gaussian_kl
from adapters.diffusion.vadd import VADDAdapter, VADDParams, inner_terms
from adapters.diffusion.vae import VAEAdapter
from bench.adapter import Conditioning, NFEMeter
from bench.context import Cache
from bench.data.base import ImageDataset, ImageSplit

TINY = {"width": 16, "depth": 2, "nll_t_samples": 2}


def binary_dataset(n_train: int = 64, n_test: int = 16) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n_train + n_test) % 10
    imgs = (torch.rand(n_train + n_test, 1, 28, 28, generator=g) > 0.7).to(torch.uint8) * 255
    return ImageDataset("fmnist_q2", ImageSplit(imgs[:n_train], labels[:n_train]),
                        ImageSplit(imgs[n_train:], labels[n_train:]), 10, 1, 28, "synthetic")


def prepared(cls, params, tmp_path, steps: int = 3):
    ctx = SimpleNamespace(dataset=binary_dataset(), budget={"train_steps": steps, "batch_size": 16},
                          cache=Cache(tmp_path / "cache"), artifact_dir=tmp_path / "art", progress=False,
                          log_param=lambda k, v: None, log_metric=lambda k, v, s=None: None)
    a = cls(params, seed=0)
    a.prepare(ctx)
    return a


@pytest.mark.parametrize("schedule", process.SCHEDULES)
def test_forward_process_masks_with_schedule_probability(schedule):
    g = torch.Generator().manual_seed(0)
    n = 20000
    for t in (0.1, 0.5, 0.9):
        x0 = torch.zeros(4, n, dtype=torch.long)
        x_t, mask = process.forward_mask(x0, torch.full((4,), t), schedule, 2, g)
        p = float(1 - process.alpha(torch.tensor(t), schedule))
        frac = mask.double().mean().item()
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / (4 * n)), (schedule, t, frac, p)
        assert torch.equal(x_t == 2, mask) and bool((x_t[~mask] == 0).all())


def test_reverse_kernel_never_changes_an_unmasked_token():
    g = torch.Generator().manual_seed(1)
    v, mask_id = 3, 3
    x = torch.full((50, 40), mask_id, dtype=torch.long)
    x[:, :10] = torch.randint(0, v, (50, 10), generator=g)
    steps = 8
    for k in range(steps, 0, -1):
        logits = torch.randn(50, 40, v, generator=g) * 3
        y = process.reverse_step(x, logits, k / steps, (k - 1) / steps, "linear", mask_id, g)
        keep = x != mask_id
        assert torch.equal(y[keep], x[keep])
        assert bool((y[~keep] >= 0).all()) and bool((y[y != mask_id] < v).all())
        x = y
    assert not bool((x == mask_id).any()), "s = 0 unmasks every position"


def test_vadd_loss_equals_mdm_loss_with_kl_weight_zero_and_z_ignored(tmp_path):
    ds = binary_dataset()
    mdm, vadd = MDMAdapter(MDMParams(**TINY), 0), VADDAdapter(VADDParams(**TINY, z_dim=4), 0)
    for a in (mdm, vadd):
        a.bind(ds)
        a.nets = a.build(a.net_config())
    missing = vadd.den.load_state_dict(mdm.den.state_dict(), strict=False)
    assert all(k.startswith("ada.") for k in missing.missing_keys)
    x0 = torch.randint(0, 2, (32, 784), generator=torch.Generator().manual_seed(3))
    y = torch.arange(32) % 10
    l_mdm, _ = mdm.loss(x0, y, 0.0, torch.Generator().manual_seed(7))
    l_vadd, _ = vadd.loss(x0, y, 0.0, torch.Generator().manual_seed(7), ignore_z=True)
    torch.testing.assert_close(l_vadd, l_mdm)
    l_kl, parts = vadd.loss(x0, y, 1.0, torch.Generator().manual_seed(7), ignore_z=True)
    assert bool((l_kl.detach() >= l_mdm.detach() - 1e-5).all()) and float(parts["kl_nats"].detach()) > 0  # the KL term is there


@pytest.mark.parametrize("cls,params", [(MDMAdapter, MDMParams(**TINY)),
                                        (VADDAdapter, VADDParams(**TINY, z_dim=4, sampler="per_step")),
                                        (VADDAdapter, VADDParams(**TINY, z_dim=4, sampler="per_trajectory")),
                                        (VAEAdapter, VADDParams(**TINY, z_dim=4))])
def test_seeded_samples_and_measured_nfe(cls, params, tmp_path):
    a = prepared(cls, params, tmp_path)
    labels = Conditioning(labels=torch.arange(12) % 10)
    for steps in (1, 3, 7):
        with NFEMeter() as m:
            x = a.sample(12, labels, steps, seed=5)
        assert m.per_image(12) == (1 if cls is VAEAdapter else steps)
        assert x.dtype == torch.uint8 and x.shape == (12, 1, 28, 28) and set(x.unique().tolist()) <= {0, 255}
        assert torch.equal(x, a.sample(12, labels, steps, seed=5))
        assert not torch.equal(x, a.sample(12, labels, steps, seed=6))
    assert (tmp_path / "art" / "samples").is_dir() and (tmp_path / "art" / "plots").is_dir()


def test_sampler_choice_does_not_change_training_cache(tmp_path):
    a = prepared(VADDAdapter, VADDParams(**TINY, z_dim=4, sampler="per_step"), tmp_path)
    b = prepared(VADDAdapter, VADDParams(**TINY, z_dim=4, sampler="per_trajectory"), tmp_path)
    assert b.record == a.record  # loaded from a's cache entry, not retrained
    for p, q in zip(a.den.parameters(), b.den.parameters()):
        assert torch.equal(p, q)


def test_compute_matched_mdm_trains_more_steps(tmp_path):
    a = prepared(MDMAdapter, MDMParams(**TINY, compute_match="vadd-flops", match_z_dim=4), tmp_path, steps=4)
    assert a.record["train_steps"] > 4 and a.flops_ratio > 1


def _toy(seed: int = 0):
    cfg = NetConfig(n_tokens=3, vocab=2, width=8, depth=2, num_classes=0, z_dim=1)
    torch.manual_seed(seed)
    den, rec = Denoiser(cfg), Recognition(cfg)
    for m in den.ada:  # give z a real effect (adaLN-Zero starts at none)
        torch.nn.init.normal_(m.weight, std=1.5)
    return cfg, den.eval(), rec.eval()


def test_iw_estimate_is_at_least_the_bound_on_an_exact_toy():
    """N = 3, V = 2, d = 1: masks are enumerated, t is integrated exactly (linear schedule:
    int_0^1 (1/t) t^k (1-t)^(N-k) dt = B(k, N-k+1)) and z by Gauss-Hermite quadrature, so the
    exact DELBO bound, the exact marginal (z integrated out) and the IW estimate can be compared:
    marginal NELBO <= IW NELBO <= bound NELBO (i.e. log-likelihood estimates IW >= bound)."""
    cfg, den, rec = _toy()
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    u, wq = torch.tensor(nodes, dtype=torch.float32), torch.tensor(weights / math.sqrt(math.pi), dtype=torch.float32)
    x0 = torch.tensor([[1, 0, 1]])
    gen = torch.Generator().manual_seed(0)
    tot = {"bound": 0.0, "marginal": 0.0, "iw": 0.0, "bound_mc": 0.0}
    with torch.no_grad():
        for bits in range(1, 2 ** 3):
            mask = torch.tensor([[(bits >> i) & 1 for i in range(3)]], dtype=torch.bool)
            x_t = x0.masked_fill(mask, cfg.mask_id)
            beta = math.gamma(int(mask.sum())) * math.gamma(3 - int(mask.sum()) + 1) / math.gamma(4)

            def ce(z):  # -log p(x0_masked | x_t, z) for each z in [Q]
                logits = den(x_t.repeat(len(z), 1), None, z.view(-1, 1))
                return process.masked_nll(logits, x0.repeat(len(z), 1), mask.repeat(len(z), 1))

            m, ls = rec(x0, mask)
            bound = float((wq * ce(m[0, 0] + math.sqrt(2) * ls.exp()[0, 0] * u)).sum() + gaussian_kl(m, ls))
            marginal = -math.log(float((wq * torch.exp(-ce(math.sqrt(2) * u))).sum()))
            b_mc, iw = inner_terms(den, rec, x0, x_t, mask, None, 4000, gen)
            assert marginal <= bound + 1e-6
            assert float(iw) < bound and abs(float(iw) - marginal) < 0.06  # MC noise of a random proposal
            for k, v in (("bound", bound), ("marginal", marginal), ("iw", float(iw)), ("bound_mc", float(b_mc))):
                tot[k] += beta * v
    assert abs(tot["bound_mc"] - tot["bound"]) < 0.05 * tot["bound"]
    assert abs(tot["marginal"] - tot["iw"]) < 0.05 and tot["iw"] < tot["bound"]
    assert tot["bound"] - tot["iw"] > 0.5 * (tot["bound"] - tot["marginal"])  # the IW closes most of the gap


def test_likelihoods_in_bits_are_finite_and_ordered(tmp_path):
    a = prepared(VADDAdapter, VADDParams(**TINY, z_dim=4), tmp_path)
    test = binary_dataset().test
    bound = a.nll(test.images, test.labels).per_sequence
    assert torch.isfinite(bound).all() and bool((bound > 0).all())
    assert torch.equal(bound, a.nll(test.images, test.labels).per_sequence)  # deterministic
    iw = a.nll_iw(test.images, test.labels, 8).per_sequence
    assert torch.isfinite(iw).all()
    assert bool((a.kl_per_image(test.images, test.labels) >= 0).all())


def test_judge_instrument_is_registered_and_verifies():
    from bench import instruments

    c = instruments.card("fmnist-bin-judge-v1", "fmnist-judge")
    assert instruments.path("fmnist-bin-judge-v1").is_file()
    assert c.provenance["levels"] == 2 and 0.5 < c.provenance["test_acc"] <= 1


def test_suites_validate_and_cifar_fails_fast_without_data(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bench.cli import main

    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "nothing"))
    ok = CliRunner().invoke(main, ["validate", "suites/fmnist_diffusion.yaml"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(main, ["validate", "suites/cifar10_diffusion.yaml"])
    assert bad.exit_code == 2 and "CIFAR10_DIR" in bad.output and "Traceback" not in bad.output


def test_paired_iw_estimate_is_at_most_the_paired_bound(tmp_path):
    """With common random numbers (same t, masks, z) the IW NLL is below the bound up to the MC KL's noise."""
    a = prepared(VADDAdapter, VADDParams(**TINY, z_dim=4), tmp_path, steps=20)
    test = binary_dataset().test
    iw = a.nll_iw(test.images, test.labels, 32).per_sequence
    assert float(iw.mean()) <= float(a.last_paired_bound.mean()) + 1e-3


def test_neighbour_agreement_matches_a_direct_count():
    from bench.metrics.diffusion import neighbour_agreement

    g = torch.Generator().manual_seed(2)
    imgs = (torch.rand(3, 1, 5, 6, generator=g) > 0.5).to(torch.uint8) * 255
    got = neighbour_agreement(imgs)
    for b in range(3):
        a = imgs[b, 0].numpy()
        pairs = [(a[i, j], a[i, j + 1]) for i in range(5) for j in range(5)] + \
                [(a[i, j], a[i + 1, j]) for i in range(4) for j in range(6)]
        assert got[b].item() == pytest.approx(sum(x == y for x, y in pairs) / len(pairs))


def test_quantized_dataset_round_trip():
    from bench.data.fmnist_quantized import images_of, tokens_of

    g = torch.Generator().manual_seed(0)
    for levels in (2, 16):
        tok = torch.randint(0, levels, (4, 784), generator=g)
        assert torch.equal(tokens_of(images_of(tok, levels), levels), tok)
    assert torch.equal(tokens_of(torch.tensor([127, 128], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 1, 1, 2), 2),
                       torch.tensor([[0, 1]]))


def test_judge_constants_kept_light_equal_their_source():
    from bench.metrics import diffusion, fmnist_judge

    assert (diffusion.KIND, diffusion.DEFAULT_JUDGE) == (fmnist_judge.KIND, fmnist_judge.DEFAULT_JUDGE)


def test_data_problems_hook_is_declared_light_and_checked():
    """`bench validate` reads the fail-fast data hook from the light declaration (no torch); a class whose
    declaration lacks its hook is refused (validation would otherwise skip the check)."""
    import pytest

    from adapters.diffusion import params
    from adapters.diffusion.common import DiffusionAdapter
    from bench import registry
    from bench.adapter import Adapter, AdapterParams

    for name in ("mdm", "vadd", "vae"):
        assert registry.ADAPTER_META[name].data_problems is params.data_problems
        assert registry.ADAPTERS[name].data_problems is DiffusionAdapter.data_problems is params.data_problems

    class P(AdapterParams):
        pass

    registry.declare_adapter("_light_test_dp", "tests:Z", P, ())
    try:
        with pytest.raises(registry.BenchError, match="data_problems"):
            @registry.register_adapter("_light_test_dp")
            class Z(Adapter):
                Params = P
                data_problems = staticmethod(params.data_problems)
    finally:
        registry.ADAPTER_META.pop("_light_test_dp", None)


def _levels_dataset(levels: int, n_train: int = 64, n_test: int = 16) -> ImageDataset:
    from bench.data.fmnist_quantized import images_of

    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, levels, (n_train + n_test, 784), generator=g)
    imgs, labels = images_of(tok, levels), torch.arange(n_train + n_test) % 10
    return ImageDataset(f"fmnist_q{levels}", ImageSplit(imgs[:n_train], labels[:n_train]),
                        ImageSplit(imgs[n_train:], labels[n_train:]), 10, 1, 28, "synthetic")


@pytest.mark.parametrize("cls,params", [(MDMAdapter, MDMParams(**TINY)),
                                        (VADDAdapter, VADDParams(**TINY, z_dim=4, sampler="per_trajectory"))])
def test_sixteen_levels_train_sample_and_bound(cls, params, tmp_path):
    """V = 16: the mask id is 16, samples use exactly the 16 display values, the bound is finite, the
    train_cost metric reads the record, and the shipped 16-level judge classifies the samples."""
    from bench.metrics.diffusion import TrainCost
    from bench.metrics.fmnist_judge import judge

    ds = _levels_dataset(16)
    ctx = SimpleNamespace(dataset=ds, budget={"train_steps": 3, "batch_size": 16}, cache=Cache(tmp_path / "cache"),
                          artifact_dir=None, progress=False, log_param=lambda k, v: None,
                          log_metric=lambda k, v, s=None: None)
    a = cls(params, seed=0)
    a.prepare(ctx)
    assert a.levels == 16 and a.mask_id == 16
    with NFEMeter() as m:
        x = a.sample(20, Conditioning(labels=torch.arange(20) % 10), 4, seed=1)
    assert m.per_image(20) == 4
    display = {t * 255 // 15 for t in range(16)}
    assert set(x.unique().tolist()) <= display and len(x.unique()) > 8
    bpd = a.bits_per_dim(a.nll(ds.test.images, ds.test.labels).per_sequence, 784)
    assert torch.isfinite(bpd).all() and float(bpd.mean()) > 0
    cost = TrainCost().compute(a, ctx, TrainCost.Params())
    assert cost["train_steps"] == 3 and cost["train_s"] > 0 and cost["n_params"] == a.record["n_params"]
    j = judge("fmnist-q16-judge-v1")
    j.check(SimpleNamespace(dataset=ds))
    assert j.predict(x).shape == (20,) and j.features(ImageSplit(x, torch.zeros(20, dtype=torch.long)), 10).shape == (20, 64)


def test_judge_of_other_levels_is_refused_naming_the_train_command():
    from bench.errors import MetricError
    from bench.metrics.fmnist_judge import judge

    with pytest.raises(MetricError, match=r"fmnist-q16-judge-v1.*bench instrument train fmnist-judge .*--levels 16"):
        judge("fmnist-bin-judge-v1").check(SimpleNamespace(dataset=_levels_dataset(16, 2, 2)))


def test_wall_matched_control_is_fixed_in_the_suite():
    """mdm_wall's steps come from the suite (no timer at run time): its budget names them and the train_cost
    column that shows the realised match is there."""
    from bench.plan import resolve

    cells = {c.method: c for c in resolve("fmnist_diffusion", seeds=[0]).cells}
    wall, vadd = cells["mdm_wall"], cells["vadd_step"]
    assert wall.adapter == "mdm" and wall.params == cells["mdm"].params
    assert wall.budget["train_steps"] > vadd.budget["train_steps"] == cells["mdm"].budget["train_steps"]
    assert "train_cost" in {m.name for m in wall.metrics}


def test_validate_refuses_a_judge_of_other_levels(tmp_path):
    """`bench validate` (no cell run) refuses the 2-level judge on 16-level data, naming the 16-level judge and
    the `bench instrument train` command; the shipped 16-level suite passes."""
    import yaml
    from click.testing import CliRunner

    from bench.cli import main

    raw = yaml.safe_load(open("suites/fmnist16_diffusion.yaml"))
    for m in raw["metrics"]:
        (m.get("params") or {}).pop("judge", None)
    bad = tmp_path / "bad16.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = CliRunner().invoke(main, ["validate", str(bad)])
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "metrics[0].params: judge: fmnist-bin-judge-v1 judges 2-level images" in out.output
    assert "use judge: fmnist-q16-judge-v1" in out.output and "--levels 16" in out.output
    ok = CliRunner().invoke(main, ["validate", "suites/fmnist16_diffusion.yaml"])
    assert ok.exit_code == 0, ok.output
