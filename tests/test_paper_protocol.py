"""Paper-scale protocol fixes on tiny synthetic files: gFID vs the ADM batch's own mu/sigma,
the temperature sweep, precision/recall, clean-fid's resize as its own instrument, Inception Score.

The Inception network is replaced by a cheap fake feature function (monkeypatched where the
extractor looks it up) except in the clean-resize and IS tests, which run it on a handful of images.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from pydantic import Field

from bench import inputs
from bench.adapter import Adapter, AdapterParams
from bench.context import Cache, CellContext
from bench.errors import MetricError
from bench.metrics import fid, inception, prc
from bench.metrics.adm_stats import reference_statistics
from bench.sampling import at_temperature, supports_temperature
from bench.suite import MetricSpec
from tiny_images import tiny_dataset

D = 6


def fake_features(images, batch_size=50, progress=False, device="cpu", cache=None):
    """float64 [N, 6]: mean intensity of 6 horizontal bands (a deterministic stand-in for Inception)."""
    x = images.double().mean(1)  # [N, H, W]
    bands = torch.tensor_split(x, D, dim=1)
    return torch.stack([b.mean((1, 2)) for b in bands], 1).numpy()


class TempParams(AdapterParams):
    temperature: float = Field(1.0, gt=0)


class TempSampler(Adapter):
    """Images whose noise scales with the sampling temperature (class c: a bright band at rows 4c..4c+10)."""

    capabilities = frozenset({"generate"})
    registry_name = "test-temp-sampler"
    Params = TempParams

    def __init__(self):
        super().__init__(TempParams(), 0)
        self.calls: list[float] = []

    def sample(self, n, cond, steps, seed):
        self.calls.append(self.params.temperature)
        g = torch.Generator().manual_seed(seed)
        base = torch.zeros(n, 1, 28, 28)
        for i, c in enumerate(cond.labels.tolist()):
            base[i, :, 4 * c: 4 * c + 10, 3:25] = 180
        noise = 60 * self.params.temperature * torch.rand(n, 1, 28, 28, generator=g)
        return (base + noise).clamp(0, 255).to(torch.uint8)


def make_ctx(tmp_path, metrics):
    logged: dict = {}
    ctx = CellContext(suite=type("S", (), {"metrics": [MetricSpec(name=k, params=p) for k, p in metrics]})(),
                      method=None, seed=0, budget={}, dataset=tiny_dataset(), cache=Cache(tmp_path / "cache"),
                      artifact_dir=tmp_path / "art", log_param=lambda k, v: logged.__setitem__(k, v),
                      log_metric=lambda k, v, step=None: logged.setdefault(f"metric:{k}", []).append((step, v)),
                      progress=False, device=torch.device("cpu"))
    return ctx, logged


def hand_fd(f, mu, sigma):
    m, s = f.mean(0), np.cov(f, rowvar=False)
    covmean = scipy.linalg.sqrtm(s @ sigma).real
    return float(((m - mu) ** 2).sum() + np.trace(s) + np.trace(sigma) - 2 * np.trace(covmean))


@pytest.fixture
def fake_inception(monkeypatch):
    calls = []

    def spy(images, **kw):
        calls.append(len(images))
        return fake_features(images)

    monkeypatch.setattr(inception, "inception_features", spy)
    return calls


def write_adm(path, n=30, with_stats=True, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    mu = rng.normal(40.0, 5.0, D)  # deliberately not the statistics of arr_0
    a = rng.normal(size=(D, D))
    sigma = a @ a.T + 10 * np.eye(D)
    extra = {"mu": mu, "sigma": sigma, "mu_s": np.zeros(3), "sigma_s": np.eye(3)} if with_stats else {}
    np.savez(path, arr_0=arr, **extra)
    return arr, mu, sigma


def test_adm_gfid_uses_the_batch_mu_sigma(tmp_path, monkeypatch, fake_inception):
    npz = tmp_path / "VIRTUAL_imagenet256_labeled.npz"
    arr, mu, sigma = write_adm(npz)
    monkeypatch.setenv("ADM_REF_BATCH", str(npz))
    ctx, logged = make_ctx(tmp_path, [("gfid", {"n": 24, "reference": "adm"})])
    params = fid.GenerationFIDParams(n=24, reference="adm")
    adapter = TempSampler()
    out = fid.GenerationFID().compute(adapter, ctx, params)

    f_fake = fake_features(adapter.sample(24, inputs.Conditioning(labels=torch.arange(24) % 4), None, 0))
    assert out["gfid"] == pytest.approx(hand_fd(f_fake, mu, sigma), rel=1e-6)
    f_img = fake_features(torch.from_numpy(arr[:24].transpose(0, 3, 1, 2).copy()))
    assert abs(out["gfid"] - hand_fd(f_fake, f_img.mean(0), np.cov(f_img, rowvar=False))) > 1.0  # not the images'
    assert "gkid" in out  # KID still against the batch's images
    assert logged["gfid.reference_stats"].startswith("ADM batch mu/sigma")
    assert len(logged["gfid.reference_npz_sha256"]) == 64


def test_adm_batch_without_mu_sigma_is_refused(tmp_path):
    npz = tmp_path / "no_stats.npz"
    write_adm(npz, with_stats=False)
    with pytest.raises(MetricError, match="no mu/sigma"):
        reference_statistics(npz)


def test_temperature_sweep_columns_samples_and_restore(tmp_path, fake_inception):
    ctx, logged = make_ctx(tmp_path, [("gfid", {"n": 20, "temperatures": [0.5, 2.0]})])
    params = fid.GenerationFIDParams(n=20, temperatures=[0.5, 2.0])
    adapter = TempSampler()
    out = fid.GenerationFID().compute(adapter, ctx, params)
    assert set(out) == {"gfid_temp0p5", "gfid_temp2", "gkid_temp0p5", "gkid_temp2", "gfid_temp0p5_stderr",
                        "gfid_temp2_stderr", "gfid_floor", "gfid_floor_stderr", "gkid_floor"}  # floor: T-independent
    assert set(fid.GenerationFID.columns(params)) == {k for k in out if not k.endswith(("_stderr", "_floor"))}
    assert fid.GenerationFID.columns(params)["gfid_temp0p5"].title == "gFID (inception-tf, n=20, T=0.5)"
    assert adapter.calls == [0.5, 2.0] and adapter.params.temperature == 1.0  # each once, then restored
    assert out["gfid_temp0p5"] != out["gfid_temp2"]
    p = inputs.provider(ctx)
    assert len(p.pooled(inputs.SAMPLES, None, 0.5)) == 20 and p.pooled(inputs.SAMPLES) is None
    assert logged["gfid.temperatures"] == "0.5,2"
    class Boot(fid.GenerationFID):  # with a bootstrap stderr: <key>_temp<T>_stderr, next to its value
        bootstrap_resamples = 3

    out = Boot().compute(adapter, ctx, params)
    assert {"gfid_temp0p5_stderr", "gfid_temp2_stderr"} <= set(out) and all("stderr_temp" not in k for k in out)
    # no sweep: the config (dumped params) is unchanged
    assert "temperatures" not in fid.GenerationFIDParams(n=20).model_dump()


def test_temperature_needs_a_temperature_param():
    class NoTemp(Adapter):
        capabilities = frozenset({"generate"})
        registry_name = "no-temp"

    assert supports_temperature(TempParams) and not supports_temperature(AdapterParams)
    with pytest.raises(MetricError, match="no `temperature` param"):
        with at_temperature(NoTemp(AdapterParams(), 0), 0.7):
            pass
    with pytest.raises(ValueError):
        fid.GenerationFIDParams(n=10, temperatures=[0.0])


def test_validate_refuses_temperatures_for_a_method_without_one(tmp_path):
    from bench.errors import SuiteError
    from bench.plan import load

    suite = tmp_path / "s.yaml"
    suite.write_text("""
name: t
dataset: {name: fmnist}
methods:
  - {name: mdm, adapter: mdm, baseline: true}
metrics:
  - {name: gfd_fmnist, params: {n: 20, temperatures: [0.8, 1.0]}}
""")
    with pytest.raises(SuiteError, match=r"metrics\[0\].params.temperatures: methods \['mdm'\] have no `temperature`"):
        load(suite)


def brute_pr(fake, real, k):
    dff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    drr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    dfr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r_real = np.sort(drr, 1)[:, k]  # k-th neighbour (column 0 is the point itself)
    r_fake = np.sort(dff, 1)[:, k]
    precision = (dfr <= r_real[None]).any(1).mean()
    recall = (dfr.T <= r_fake[None]).any(1).mean()
    return precision, recall


def test_precision_recall_against_brute_force_and_by_hand():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(60, 5)), rng.normal(0.7, 1.3, size=(50, 5))
    for k in (1, 3, 5):
        assert prc.precision_recall(fake, real, k) == pytest.approx(brute_pr(fake, real, k), abs=1e-6)  # float32 means; one point = 0.02
    # half the samples on the real cluster, half far away: precision 1/2; the real set is fully covered
    real = rng.normal(size=(40, 3))
    fake = np.concatenate([real[:20] + 1e-3, real[:20] + 100.0])
    p, r = prc.precision_recall(fake, real, 3)
    assert p == pytest.approx(0.5) and r < 1.0


def test_prc_metric_shares_the_gfid_features(tmp_path, fake_inception):
    ctx, logged = make_ctx(tmp_path, [("gfid", {"n": 20}), ("prc", {"n": 20})])
    adapter = TempSampler()
    fid.GenerationFID().compute(adapter, ctx, fid.GenerationFIDParams(n=20))
    n_calls = len(fake_inception)
    params = prc.PRParams(n=20, k=3)
    out = prc.PrecisionRecall().compute(adapter, ctx, params)
    assert len(fake_inception) == n_calls  # the same feature arrays, extracted once
    assert set(out) == {"precision", "recall", "precision_stderr", "recall_stderr"}
    assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1
    cols = prc.PrecisionRecall.columns(params)
    assert cols["precision"].title == "Precision (inception-tf, n=20, k=3)" and cols["recall"].higher_is_better
    assert logged["prc.k"] == 3 and logged["prc.n"] == 20
    for bad in ({"n": 3, "k": 3}, {"n": 10, "instrument": "nope"}, {"n": 10, "k": 0}):
        with pytest.raises(ValueError):
            prc.PRParams.model_validate(bad)


def test_clean_resize_is_clean_fids_and_its_own_instrument(tmp_path):
    from PIL import Image
    from cleanfid.utils import ResizeDataset

    from bench.instruments.features import extractor
    from bench.metrics import inception_clean

    x = tiny_dataset().test.images[:2]
    files = []
    for i, img in enumerate(inception.to_rgb_uint8(x)):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(files[-1])
    ref = torch.stack([ResizeDataset(files, mode="clean")[i] for i in range(2)])  # clean-fid's own pipeline
    ours = inception_clean.clean_resize(x)
    assert ours.shape == (2, 3, 299, 299) and torch.equal(ours, ref)

    clean, tf1 = extractor("inception-tf-clean"), extractor("inception-tf")
    assert clean.cache_key() != tf1.cache_key() and clean.provenance()["resize"] == "clean-fid-pil-bicubic-299"
    f_clean = inception_clean.clean_features(x, progress=False)
    f_tf1 = inception.inception_features(x, progress=False, cache=Cache(tmp_path / "cache"))
    assert f_clean.shape == (2, 2048) and np.abs(f_clean).max() > 0.1
    assert not np.allclose(f_clean, f_tf1, rtol=1e-3)  # the resize changes the features
    p = fid.GenerationFIDClean.Params.model_validate({"n": 10})
    assert list(fid.GenerationFIDClean.columns(p)) == ["gfid_clean"]
    assert fid.GenerationFIDClean.columns(p)["gfid_clean"].title == "gFID (inception-tf-clean, n=10)"
    with pytest.raises(ValueError):
        fid.GenerationFIDClean.Params.model_validate({"n": 10, "reference": "adm"})


def test_inception_score_fails_fast_without_weights(monkeypatch):
    from bench.metrics.inception_score import ENV, InceptionScore, ISParams

    params = ISParams(n=10, weights_sha256="0" * 64)
    monkeypatch.delenv(ENV, raising=False)
    (line,) = InceptionScore.environment_problems(params)
    assert ENV in line and "logits" in line
    monkeypatch.setenv(ENV, "/nonexistent/weights.pth")
    assert "does not exist" in InceptionScore.environment_problems(params)[0]


def test_inception_score_with_given_logits_weights(tmp_path, monkeypatch):
    """A weights file = the verified FID network + a logits layer; IS equals torch-fidelity's on
    logits computed independently from the FID pipeline's pool3 features."""
    from safetensors.torch import save_file
    from torch_fidelity.metric_isc import isc_features_to_metric

    from bench.context import sha256_file
    from bench.metrics.inception_score import ENV, InceptionScore, ISParams

    cache = Cache(tmp_path / "cache")
    state = inception.converted_state_dict(cache)
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = 0.05 * torch.randn(1008, 2048, generator=g)
    state["fc.bias"] = torch.randn(1008, generator=g)
    path = tmp_path / "is.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    monkeypatch.setenv(ENV, str(path))
    sha = sha256_file(path)
    params = ISParams(n=8, splits=2, weights_sha256=sha)
    ctx, logged = make_ctx(tmp_path, [("isc", params.model_dump())])
    ctx.cache = cache
    adapter = TempSampler()
    out = InceptionScore().compute(adapter, ctx, params)

    images = inputs.provider(ctx).get(inputs.samples(8), adapter).images
    pool = torch.from_numpy(inception.inception_features(images, progress=False, cache=cache)).float()
    ref = isc_features_to_metric(pool @ state["fc.weight"].T, 2, shuffle=True, rng_seed=2020)
    assert out["isc"] == pytest.approx(ref["inception_score_mean"], rel=1e-3)
    assert out["isc"] > 1.0 and logged["isc.weights_sha256"] == sha
    with pytest.raises(MetricError, match="sha256"):
        InceptionScore().compute(adapter, ctx, ISParams(n=8, splits=2, weights_sha256="1" * 64))
