"""Sampling uncertainty of the Inception FID/KID and the entropy metric: what is logged,
what is measured against an independent reference, and what is never logged as 0."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench import inputs
from bench.context import Cache, CellContext
from bench.data.base import ImageDataset, ImageSplit
from bench.metrics import fid
from bench.metrics.frechet import frechet_bootstrap_stderr, frechet_distance
from bench.metrics.frechet_lowrank import frechet_distance_qr
from bench.suite import MetricSpec


def _sets(n_a, n_b, d, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, d)) / np.sqrt(d)
    return np.abs(rng.normal(size=(n_a, d)) @ w), np.abs(rng.normal(0.2, 1.1, size=(n_b, d)) @ w)


@pytest.mark.parametrize("n_a,n_b,d", [(40, 47, 256), (300, 290, 32), (20, 20, 2048)])
def test_qr_frechet_equals_torch_fidelity(n_a, n_b, d):
    """The QR / nuclear-norm route equals torch-fidelity's eigenvalue formula (independent code),
    for n < D (rank-deficient covariances) and n > D."""
    a, b = _sets(n_a, n_b, d)
    ref = frechet_distance(a, b)
    assert ref > 1.0
    assert frechet_distance_qr(a, b) == pytest.approx(ref, rel=1e-6)
    assert abs(frechet_distance_qr(a, a)) < 1e-8 * ref  # FD(X, X) = 0
    assert frechet_distance_qr(a, b[:-1]) != pytest.approx(ref, rel=1e-9)  # not a constant


def test_fid_bootstrap_on_2048d_features_is_affordable_and_conservative():
    """n=60 < D=2048: the bootstrap se vs the sd of FD over independent redraws of both sets. Measured
    ~1.4-1.75x on such toys (resampled sets with duplicates spread more): conservative, never below."""
    rng = np.random.default_rng(5)
    d, n = 2048, 60
    w = rng.normal(size=(d, d)) / np.sqrt(d)
    draw = lambda: (np.abs(rng.normal(size=(n, d)) @ w), np.abs(rng.normal(0.1, 1.1, size=(n, d)) @ w))  # noqa: E731
    fds = [frechet_distance_qr(*draw()) for _ in range(30)]
    ses = [frechet_bootstrap_stderr(*draw(), resamples=20, seed=i) for i in range(3)]
    ratio = np.mean(ses) / np.std(fds, ddof=1)
    assert 0.9 < ratio < 2.5, ratio
    a, b = draw()
    assert frechet_bootstrap_stderr(a, b, 20, seed=1) == frechet_bootstrap_stderr(a, b, 20, seed=1)  # seeded


def test_fid_columns_declare_the_stderr_only_where_it_is_logged():
    small = fid.ReconstructionFID.columns(fid.InceptionParams(n=200))
    assert "bootstrap over images, 20 resamples" in small["rfid"].uncertainty
    assert small["rkid"].uncertainty == ""  # KID: no stderr
    assert fid.ReconstructionFID.columns(fid.InceptionParams(n=5000))["rfid"].uncertainty == ""
    from bench.metrics import inception

    assert fid.FEATURE_DIM == inception.FEATURE_DIM


class _Lossy:
    """decode(encode(x)) = x with a fixed pixel perturbation (so rFID > 0)."""

    capabilities = frozenset({"tokenize"})
    registry_name = "test-lossy"

    def encode(self, x):
        return x

    def decode(self, z):
        return (z.int() + 7).clamp(0, 255).to(torch.uint8)


def _ctx(tmp_path, n_test, metrics):
    logged: dict = {}
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n_test, 1, 8, 8), generator=g, dtype=torch.uint8)
    split = ImageSplit(imgs, torch.arange(n_test) % 2)
    ds = ImageDataset("toy", split, split, 2, 1, 8, str(tmp_path))
    ctx = CellContext(suite=SimpleNamespace(metrics=[MetricSpec(name=k, params=p) for k, p in metrics]),
                      method=None, seed=0, budget={}, dataset=ds, cache=Cache(tmp_path / "cache"),
                      artifact_dir=tmp_path, progress=False, log_param=lambda k, v: logged.__setitem__(k, v),
                      log_metric=lambda k, v, step=None: logged.__setitem__(f"metric:{k}", v))
    return ctx, logged


@pytest.mark.parametrize("n,subset,kid_std_logged", [(30, 30, False), (30, 10, True)])
def test_rfid_logs_a_stderr_and_kid_spread_only_when_it_measures_something(tmp_path, monkeypatch, n, subset,
                                                                           kid_std_logged):
    """compute() on fixed fake 2048-d features (no Inception run): rfid_stderr is there and > 0; the KID
    std over subsets is logged only when a subset is smaller than the sets (else every subset is the
    whole set and its 'spread' is exactly 0: nothing is logged, never a 0)."""
    from bench.instruments.features import InceptionTF

    rng = np.random.default_rng(3)

    def fake_features(self, images, batch_size, ctx, real=False):
        base = images.images.reshape(len(images), -1).double().numpy() / 255.0
        return np.tanh(np.tile(base, (1, 32)) + 0.05 * rng.normal(size=(len(images), 2048)))

    monkeypatch.setattr(InceptionTF, "features", fake_features)
    params = {"n": n, "kid_subset_size": subset, "batch_size": 10}
    ctx, logged = _ctx(tmp_path, n, [("rfid", params)])
    m = fid.ReconstructionFID()
    out = m.compute(_Lossy(), ctx, m.Params.model_validate(params))
    assert {k for k in out if "_floor" not in k} == {"rfid", "rkid", "rfid_stderr"}
    assert out["rfid"] > 0 and out["rfid_stderr"] > 0, out
    assert ("metric:rkid_std" in logged) == kid_std_logged
    if kid_std_logged:
        assert logged["metric:rkid_std"] > 0
    assert "rkid_stderr" not in out
    assert len(inputs.provider(ctx).pooled(inputs.RECONSTRUCTIONS)) == n


def test_entropy_h0_stderr_matches_the_spread_of_redraws():
    """The delta-method se of the plug-in H_0 vs the sd of H_0 over independent token draws (K=5, N=400)."""
    from bench.metrics.entropy import conditional_entropy_per_position, entropy_stderr

    rng = np.random.default_rng(9)
    p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    draws = [rng.choice(5, size=(400, 1), p=p) for _ in range(2000)]
    h0 = [conditional_entropy_per_position(z)[0] for z in draws]
    se = np.mean([entropy_stderr(z[:, 0]) for z in draws[:20]])
    assert 0.85 < se / np.std(h0, ddof=1) < 1.15
    assert entropy_stderr(np.zeros(50, dtype=int)) == 0.0  # one symbol: H_0 = 0 exactly, no sampling error
