"""FID/KID in TF-Inception features: equal to torch-fidelity's, cached references, clear errors.

Inception runs at ~5-20 img/s on 2 CPU cores and each FID does one 2048x2048 eigvals (~7 s),
so this file uses tens of images and three FIDs in all.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bench.context
from bench import inputs, registry
from bench.adapter import Adapter, AdapterParams
from bench.context import Cache, CellContext
from bench.data.base import ImageDataset, ImageSplit
from bench.data.fmnist import fmnist_dir, load_split
from bench.errors import BenchError
from bench.metrics import fd_fmnist, fid, inception  # noqa: F401  (fd_fmnist registers rfd/gfd_fmnist)
from bench.suite import MetricSpec
from tiny_images import IdentityTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    """A module-wide cache dir (the converted weights are made once), never results/."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench.context, "RESULTS_DIR", root.parent / "results-unused")
        yield root


@pytest.fixture(scope="module")
def fmnist():
    d = fmnist_dir()
    return SimpleNamespace(dir=d, train=load_split(d, "train"), test=load_split(d, "test"))


@pytest.fixture(scope="module")
def two_sets(fmnist, cache_root):
    """20 test and 20 train images (uint8 [20, 1, 28, 28]) with our float64 [20, 2048] features."""
    a, b = fmnist.test.images[:20], fmnist.train.images[:20]
    cache = Cache(cache_root)
    fa = inception.inception_features(a, batch_size=10, progress=False, cache=cache)
    fb = inception.inception_features(b, batch_size=10, progress=False, cache=cache)
    return a, b, fa, fb


class TrainSampler(Adapter):
    """'Generates' training images of the requested labels (from the end of the train split)."""

    capabilities = frozenset({"generate"})
    registry_name = "test-train-sampler"

    def __init__(self, train: ImageSplit):
        super().__init__(AdapterParams(), 0)
        self.train = train

    def sample(self, n, cond, steps, seed):
        idx = [int(torch.nonzero(self.train.labels == c).flatten()[-1 - i]) for i, c in enumerate(cond.labels.tolist())]
        return self.train.images[idx]


def make_ctx(fmnist, cache_root, tmp_path, metrics) -> tuple[CellContext, dict]:
    logged: dict = {}
    ds = ImageDataset("fmnist", fmnist.train.head(3000), fmnist.test.head(200), 10, 1, 28, str(fmnist.dir))
    ctx = CellContext(
        suite=SimpleNamespace(metrics=[MetricSpec(name=k, params=p) for k, p in metrics]),
        method=None, seed=0, budget={}, dataset=ds, cache=Cache(cache_root), artifact_dir=tmp_path,
        log_param=lambda k, v: logged.__setitem__(k, v), progress=False,
        log_metric=lambda k, v, step=None: logged.__setitem__(f"metric:{k}", v),
    )
    return ctx, logged


def test_converted_weights_match_torchscript(fmnist, cache_root):
    """The renamed state dict reproduces the TorchScript FID network (same resize, same scaling)."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = fmnist.test.images[:4]
    ours = inception.inception_features(x, progress=False, cache=Cache(cache_root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
        ts = torch.jit.load(str(inception.weights_path()), map_location="cpu").eval()
    with torch.no_grad():
        r = interpolate_bilinear_2d_like_tensorflow1x(inception.to_rgb_uint8(x).float(), size=(299, 299),
                                                      align_corners=False)
        ref = ts((r - 128) / 128).double().numpy()
    assert ours.shape == (4, 2048) and ours.dtype == np.float64
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(ref).max() > 1.0  # not trivially zero


def test_fid_kid_equal_torch_fidelity(two_sets, cache_root):
    import torch_fidelity

    a, b, fa, fb = two_sets

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = inception.to_rgb_uint8(x).contiguous()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # its 2048^2 eigvals: 4x faster single-threaded here
        ref = torch_fidelity.calculate_metrics(
            input1=Images(a), input2=Images(b), fid=True, kid=True, kid_subset_size=10, cuda=False, cache=False,
            verbose=False, save_cpu_ram=True, samples_shuffle=False,
            feature_extractor_weights_path=str(inception.converted_weights_path(Cache(cache_root))),
        )
    ours_fid = fid.frechet_distance(fa, fb)
    kid_mean, kid_std = fid.kernel_distance(fa, fb, subset_size=10)
    assert ours_fid == pytest.approx(ref["frechet_inception_distance"], rel=1e-4)
    assert kid_mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert kid_std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-4)
    assert ours_fid > 10  # test vs train images of different classes: clearly apart


def test_rfid_identity_is_zero_and_reference_is_cached(fmnist, cache_root, tmp_path, monkeypatch):
    """End to end: a lossless tokenizer has rFID ~ 0; the reference features come from the cache."""
    calls: list[np.ndarray] = []
    real_fn = inception.inception_features

    def spy(images, **kw):
        calls.append(real_fn(images, **kw))
        return calls[-1]

    monkeypatch.setattr(inception, "inception_features", spy)
    ctx, logged = make_ctx(fmnist, cache_root, tmp_path, [("rfid", {"n": 12}), ("rfd_fmnist", {"n": 30})])
    metric = fid.ReconstructionFID()
    params = metric.Params.model_validate({"n": 12})
    out = metric.compute(IdentityTokenizer(AdapterParams(), 0), ctx, params)

    assert set(out) == {"rfid", "rkid", "rfid_stderr", "rfid_floor", "rfid_floor_stderr", "rkid_floor"}  # + floor; bootstrap stderr (n=12 < 2048: QR route, cheap)
    assert "metric:rkid_std" not in logged  # subset = the whole set (12 of 12): a 0 "spread" is not logged
    assert all(np.isfinite(v) for v in out.values())
    assert abs(out["rfid"]) < 1e-2  # FID(X, X) = 0 up to eigvals round-off, never NaN
    assert len(calls) == 3  # reference (real) + reconstructions + the floor's class-balanced train images
    assert len(inputs.provider(ctx).pooled(inputs.RECONSTRUCTIONS)) == 30  # once, for the largest n in the suite
    assert (tmp_path / "samples" / "reconstructions.png").stat().st_size > 0
    assert logged["rfid.n"] == 12 and logged["rfid.weights_sha256"] == inception.WEIGHTS_SHA256
    assert logged["rfid.resize"] == inception.RESIZE_MODE and logged["rfid.extractor"] == inception.EXTRACTOR_ID

    # Cache hit: same image set -> identical features, Inception not run again.
    ref_split = fmnist.test.head(12)
    again = fid.reference_features(ref_split, ctx)
    assert len(calls) == 3 and np.array_equal(again, calls[0])
    # A different image set is a different key -> recomputed.
    fid.reference_features(fmnist.test.head(11), ctx)
    assert len(calls) == 4


def test_gfid_pairs_balanced_samples_with_balanced_train(fmnist, cache_root, tmp_path):
    ctx, _ = make_ctx(fmnist, cache_root, tmp_path, [("gfid", {"n": 20}), ("gfd_fmnist", {"n": 40})])
    real, fake = fid.GenerationFID().image_sets(TrainSampler(ctx.dataset.train), ctx, fid.GenerationFIDParams(n=20))
    assert len(real) == len(fake) == 20
    assert torch.bincount(real.labels, minlength=10).tolist() == [2] * 10
    assert torch.bincount(fake.labels, minlength=10).tolist() == [2] * 10
    assert torch.equal(real.images, ctx.dataset.train.class_balanced(20).images)
    assert len(inputs.provider(ctx).pooled(inputs.SAMPLES)) == 40  # sampled once for the largest n of the suite
    assert (tmp_path / "samples" / "samples.png").exists()


def test_params_and_columns():
    # registry.METRICS directly: registry.get would import every adapter module too
    cls = registry.METRICS["rfid"]
    assert cls is fid.ReconstructionFID and cls.requires == ("tokenize",)
    assert registry.METRICS["gfid"] is fid.GenerationFID and fid.GenerationFID.requires == ("generate",)
    p = cls.Params.model_validate({"n": 200})
    assert p.kid_subset_size == 200
    assert cls.Params.model_validate({"n": 5000}).kid_subset_size == 1000
    cols = cls.columns(p)
    assert cols["rfid"].title == "rFID (inception-tf, n=200)" and not cols["rfid"].higher_is_better
    assert cols["rkid"].title == "rKID (inception-tf, n=200)"
    for bad in ({"n": 1}, {"n": 10, "kid_subset_size": 11}, {"n": 10, "foo": 1}):
        with pytest.raises(ValueError):
            cls.Params.model_validate(bad)


def test_missing_or_wrong_weights_say_make_install(monkeypatch):
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BenchError, match="make install"):
        inception.weights_path()
    monkeypatch.undo()
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(BenchError, match="make install"):
        inception.weights_path()
