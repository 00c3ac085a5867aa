"""Fashion-MNIST CNN features: the shipped instrument (sha256, ids), deterministic training, sane
Fréchet distances, shared declared inputs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.adapter import Adapter, AdapterParams
from bench.context import Cache, CellContext
from bench.data.base import ImageDataset, ImageSplit
from bench.data.fmnist import fmnist_dir, load_split
from bench.errors import MetricError
from bench.metrics import fd_fmnist, fid  # noqa: F401  (fid registers gfid/rfid for pool sizing)
from bench.metrics import fmnist_classifier as fc
from bench import inputs
from bench.metrics.fid import frechet_distance
from bench.suite import MetricSpec
from tiny_images import IdentityTokenizer  # noqa: E402

TINY = fc.Recipe(epochs=1, n_train=3000, batch_size=64)  # ~2-4 s on 2 cores


@pytest.fixture(scope="module")
def fmnist():
    d = fmnist_dir()
    return SimpleNamespace(dir=d, train=load_split(d, "train"), test=load_split(d, "test"))


@pytest.fixture(scope="module")
def clf(fmnist):
    return fc.train_classifier(fmnist.train, fmnist.test.head(2000), TINY)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return Cache(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_default(module_cache):
    """A temporary cache (the metrics use the shipped instrument, nothing is trained)."""
    return module_cache


def test_training_is_deterministic_and_beats_chance(fmnist, clf):
    prev = torch.get_num_threads()
    other = 2 if prev == 1 else 1
    torch.set_num_threads(other)  # the caller's thread count must not change the weights
    try:
        again = fc.train_classifier(fmnist.train, fmnist.test.head(2000), TINY)
        assert torch.get_num_threads() == other  # restored after training
    finally:
        torch.set_num_threads(prev)
    assert again.weights_sha256 == clf.weights_sha256
    assert clf.test_acc > 0.5  # chance is 0.1
    other_seed = fc.train_classifier(fmnist.train.head(640), fmnist.test.head(100), fc.Recipe(epochs=1, n_train=640, seed=1))
    assert other_seed.weights_sha256 != clf.weights_sha256


def test_shipped_instrument_loads_verified_and_same_everywhere(fmnist):
    from bench import instruments

    c = instruments.card(fc.DEFAULT_INSTRUMENT)
    assert c.kind == fc.KIND and len(c.sha256) == 64
    assert instruments.path(fc.DEFAULT_INSTRUMENT).name == "fmnist-cnn-v1.safetensors"
    clf = fc.load_classifier()
    assert clf.weights_sha256 == c.provenance["weights_sha256"]  # the weights are the card's, not retrained
    assert fc.load_classifier() is clf  # once per process
    assert clf.provenance()["extractor"] == "fmnist-cnn-v1"
    assert clf.provenance()["instrument_file_sha256"] == c.sha256
    assert 0.88 < fc.accuracy(clf.model, fmnist.test) == pytest.approx(c.provenance["test_acc"], abs=1e-4)


def test_corrupt_or_unknown_instruments_are_refused(fmnist, tmp_path, monkeypatch):
    import shutil

    from bench import instruments

    with pytest.raises(instruments.InstrumentError, match="registered: .*fmnist-cnn-v1"):
        instruments.card("fmnist-cnn-v9")
    with pytest.raises(ValueError, match="fmnist-cnn-v9"):
        fd_fmnist.FDParams(n=10, classifier="fmnist-cnn-v9")
    for f in ("fmnist-cnn-v1.json", "fmnist-cnn-v1.safetensors"):
        shutil.copy(instruments.INSTRUMENTS_DIR / f, tmp_path / f)
    monkeypatch.setattr(instruments, "cards", lambda folder=tmp_path: {
        p.stem: instruments._read_card(p) for p in tmp_path.glob("*.json")})
    assert instruments.path("fmnist-cnn-v1").parent == tmp_path
    blob = bytearray((tmp_path / "fmnist-cnn-v1.safetensors").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "fmnist-cnn-v1.safetensors").write_bytes(bytes(blob))
    with pytest.raises(instruments.InstrumentError, match="sha256"):
        instruments.path("fmnist-cnn-v1")


def test_retraining_registers_a_new_id_and_never_overwrites(fmnist, tmp_path):
    from bench import instruments

    recipe = fc.Recipe(epochs=1, n_train=640)
    card = fc.train_instrument("fmnist-cnn-t1", fmnist.train.head(640), fmnist.test.head(200), recipe,
                               folder=tmp_path, progress=False)
    c = instruments._read_card(card)
    assert c.id == "fmnist-cnn-t1" and c.provenance["recipe"]["n_train"] == 640
    assert instruments.sha256_file(tmp_path / c.file) == c.sha256
    with pytest.raises(instruments.InstrumentError, match="exists"):
        fc.train_instrument("fmnist-cnn-t1", fmnist.train.head(640), fmnist.test.head(200), recipe,
                            folder=tmp_path, progress=False)


def test_instrument_id_names_the_column_and_enters_the_config():
    a, b = fd_fmnist.FDParams(n=300), fd_fmnist.FDParams(n=300, classifier="fmnist-cnn-v1")
    assert a == b and a.model_dump()["classifier"] == "fmnist-cnn-v1"
    assert fd_fmnist.GenerationFD.columns(a)["gfd_fmnist"].title == "gFD (fmnist-cnn-v1, n=300)"


def test_fd_self_zero_and_classes_apart(fmnist, clf):
    test = fmnist.test
    by_class = [test.images[test.labels == c] for c in range(10)]
    f0, f1 = clf.features(by_class[0][:400]), clf.features(by_class[1][:400])
    f0b = clf.features(by_class[0][400:800])
    assert f0.shape == (400, fc.FEATURE_DIM) and f0.dtype == np.float64
    assert abs(frechet_distance(f0, f0)) < 1e-6
    same, apart = frechet_distance(f0, f0b), frechet_distance(f0, f1)
    assert np.isfinite(apart) and apart > 10 * same > 0


class Sampler(Adapter):
    """'Generates' train images of the requested labels (from the split's end), or noise."""

    capabilities = frozenset({"generate"})
    registry_name = "test-sampler"

    def __init__(self, train: ImageSplit, noise: bool = False):
        super().__init__(AdapterParams(), 0)
        self.train, self.noise, self.calls = train, noise, []

    def sample(self, n, cond, steps, seed):
        labels = cond.labels
        self.calls.append((n, labels.clone(), steps, seed))
        if self.noise:
            return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(seed),
                                 dtype=torch.uint8)
        idx = [int(torch.nonzero(self.train.labels == c).flatten()[-1 - i]) for i, c in enumerate(labels.tolist())]
        return self.train.images[idx]


def make_ctx(fmnist, cache, tmp_path, metrics, name="fmnist"):
    logged: dict = {}
    ds = ImageDataset(name, fmnist.train.head(5000), fmnist.test.head(500), 10, 1, 28, str(fmnist.dir))
    ctx = CellContext(
        suite=SimpleNamespace(metrics=[MetricSpec(name=k, params=p) for k, p in metrics]),
        method=None, seed=3, budget={}, dataset=ds, cache=cache, artifact_dir=tmp_path / "art",
        log_param=lambda k, v: logged.__setitem__(k, v), progress=False,
    )
    return ctx, logged


def test_rfd_identity_zero_and_provenance(fmnist, tiny_default, tmp_path):
    ctx, logged = make_ctx(fmnist, tiny_default, tmp_path, [("rfd_fmnist", {"n": 300})])
    out = fd_fmnist.ReconstructionFD().compute(IdentityTokenizer(AdapterParams(), 0), ctx,
                                               fd_fmnist.FDParams(n=300))
    assert set(out) == {"rfd_fmnist", "rfd_fmnist_stderr", "rfd_fmnist_floor", "rfd_fmnist_floor_stderr"}
    assert abs(out["rfd_fmnist"]) < 1e-6 < out["rfd_fmnist_floor"]
    assert len(logged["rfd_fmnist.classifier_weights_sha256"]) == 64
    assert logged["rfd_fmnist.classifier_test_acc"] > 0.88 and logged["rfd_fmnist.n"] == 300
    assert logged["rfd_fmnist.extractor"] == "fmnist-cnn-v1"
    assert (tmp_path / "art" / "samples" / "reconstructions.png").exists()
    cols = fd_fmnist.ReconstructionFD.columns(fd_fmnist.FDParams(n=300))
    assert cols["rfd_fmnist"].title == "rFD (fmnist-cnn-v1, n=300)" and not cols["rfd_fmnist"].higher_is_better


def test_gfd_real_samples_beat_noise_and_pool_is_shared(fmnist, tiny_default, tmp_path):
    metrics = [("gfd_fmnist", {"n": 200}), ("gfid", {"n": 250})]
    ctx, _ = make_ctx(fmnist, tiny_default, tmp_path, metrics)
    real = Sampler(ctx.dataset.train)
    good = fd_fmnist.GenerationFD().compute(real, ctx, fd_fmnist.FDParams(n=200))["gfd_fmnist"]
    # one sample() call for the largest n of the suite, cyclic labels, the cell's seed, default steps
    assert len(real.calls) == 1
    n, labels, steps, seed = real.calls[0]
    assert (n, steps, seed) == (250, None, 3) and torch.equal(labels, torch.arange(250) % 10)
    assert len(inputs.provider(ctx).get(inputs.samples(100), real)) == 100 and len(real.calls) == 1  # prefix
    assert (tmp_path / "art" / "samples" / "samples.png").exists()

    ctx2, _ = make_ctx(fmnist, tiny_default, tmp_path, metrics)
    bad = fd_fmnist.GenerationFD().compute(Sampler(ctx2.dataset.train, noise=True), ctx2,
                                           fd_fmnist.FDParams(n=200))["gfd_fmnist"]
    assert np.isfinite(good) and bad > 5 * good


def test_needs_fmnist_and_enough_images(fmnist, tiny_default, tmp_path):
    ctx, _ = make_ctx(fmnist, tiny_default, tmp_path, [("rfd_fmnist", {"n": 10})], name="cifar10")
    with pytest.raises(MetricError, match="fmnist"):
        fd_fmnist.ReconstructionFD().compute(IdentityTokenizer(AdapterParams(), 0), ctx, fd_fmnist.FDParams(n=10))
    ctx, _ = make_ctx(fmnist, tiny_default, tmp_path, [("rfd_fmnist", {"n": 600})])
    with pytest.raises(MetricError, match="n_test"):
        inputs.provider(ctx).get(inputs.reconstructions(600), IdentityTokenizer(AdapterParams(), 0))
    with pytest.raises(ValueError):
        fd_fmnist.FDParams(n=1)
