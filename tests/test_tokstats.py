"""Token statistics: I(y; z_<k), the stable cumulative cliff, token-id checks, recon PSNR."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.adapter import Adapter, AdapterParams
from bench.context import CellContext
from bench.metrics import entropy, probe, recon
from bench.metrics.entropy import EntropyParams, PositionEntropy, cliff_position, conditional_entropy_per_position
from bench.metrics.token_stats import (TokenIdError, check_token_ids, cumulative_cliff, effective_usage,
                                       prefix_bits, prefix_label_information)
from bench.suite import MetricSpec

from tiny_images import tiny_dataset


# --- I(y; z_<k) ---------------------------------------------------------------------------------
def test_prefix_information_exact_on_hand_made_sequences():
    # 8 sequences, 2 classes (H(y) = 1 bit). z_0 says nothing about y; (z_0, z_1) determines y
    # except in the prefix (1, 1), which holds one sequence of each class.
    z = np.array([[0, 0, 3], [0, 0, 2], [0, 1, 1], [0, 1, 0],
                  [1, 0, 1], [1, 0, 2], [1, 1, 3], [1, 1, 0]])
    y = np.array([0, 0, 1, 1, 0, 0, 1, 0])
    # k=1: groups {z0=0}: y = 0,0,1,1 (1 bit); {z0=1}: y = 0,0,1,0 (H(1/4) bits)
    h_quarter = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    h_y = -(3 / 8 * math.log2(3 / 8) + 5 / 8 * math.log2(5 / 8))
    # k=2: (0,0)->0,0; (0,1)->1,1; (1,0)->0,0; (1,1)->1,0: only the last (weight 2/8) has 1 bit left
    # k=3: every prefix unique -> H(y | z_<3) = 0, I = H(y)
    info = prefix_label_information(z, y, [1, 2, 3])
    assert info[1]["mi"] == pytest.approx(h_y - (0.5 * 1.0 + 0.5 * h_quarter), abs=1e-12)
    assert info[2]["mi"] == pytest.approx(h_y - 2 / 8 * 1.0, abs=1e-12)
    assert info[3]["mi"] == pytest.approx(h_y, abs=1e-12)
    assert [info[k]["groups"] for k in (1, 2, 3)] == [2, 4, 8]
    # first-order bias (R_yz - R_y - R_z + 1) / (2 N ln 2): k=1: R_yz = 4, R_y = 2, R_z = 2
    assert info[1]["bias"] == pytest.approx(1 / (16 * math.log(2)))


def test_prefix_information_independent_reference():
    rng = np.random.default_rng(1)
    z = rng.integers(0, 3, size=(400, 4))
    y = (z[:, 0] + rng.integers(0, 2, size=400)) % 3  # y depends on z_0 only
    info = prefix_label_information(z, y, [1, 2, 4])

    def ref(k):  # I = sum p(c, y) log2 p(c, y) / (p(c) p(y)), from a dict of counts
        from collections import Counter

        joint = Counter((tuple(r[:k]), int(t)) for r, t in zip(z, y))
        pc = Counter(tuple(r[:k]) for r in z)
        py = Counter(y.tolist())
        n = len(y)
        return sum(c / n * math.log2(c * n / (pc[p] * py[t])) for (p, t), c in joint.items())

    for k in (1, 2, 4):
        assert info[k]["mi"] == pytest.approx(ref(k), abs=1e-10)
    assert info[1]["mi"] > 0.5 and info[1]["mi"] <= info[2]["mi"] <= info[4]["mi"]


def test_prefix_bits():
    assert prefix_bits([2, 4, 8, 256], 3) == pytest.approx(6.0)
    assert prefix_bits([16] * 8, 8) == pytest.approx(32.0)


# --- the stable cliff ---------------------------------------------------------------------------
def test_cumulative_cliff_hand_values():
    assert cumulative_cliff(np.array([1.0, 1.0, 1.0, 1.0]), 0.5) == pytest.approx(2.0)
    assert cumulative_cliff(np.array([8.0, 8.0, 0.0, 0.0]), 0.75) == pytest.approx(1.5)
    assert cumulative_cliff(np.array([4.0, 0.0]), 0.9) == pytest.approx(0.9)
    assert cumulative_cliff(np.zeros(5), 0.9) == 0.0


def test_cumulative_cliff_stable_where_threshold_crossing_jumps():
    # vcq-like: H_0 = 1 bit, then a flat tail 0.53..1.26 bits over 16 positions (ci/default suites)
    rng = np.random.default_rng(0)
    h = np.concatenate([[1.0], np.linspace(1.26, 0.53, 15)])
    bumped = h.copy()
    bumped[4] = 0.49  # one position perturbed by ~0.6 bit... below the threshold
    small = h + rng.uniform(-0.05, 0.05, size=h.shape)
    small[3] = 0.495  # a 0.5-bit dip at position 3 only
    # the old threshold crossing jumps by many positions under these small changes
    assert cliff_position(h, 0.5) == 16
    assert cliff_position(small, 0.5) == 3
    assert cliff_position(h, 0.6) - cliff_position(h, 0.7) >= 2  # and it depends on the threshold
    # the cumulative cliff moves by a fraction of a position
    x = cumulative_cliff(h, 0.9)
    assert 12.0 < x < 15.0
    assert abs(cumulative_cliff(small, 0.9) - x) < 0.5
    assert abs(cumulative_cliff(bumped, 0.9) - x) < 0.7


def test_effective_usage():
    z = np.array([[0, 0], [1, 0], [2, 0], [3, 1]])
    u = effective_usage(z)
    assert u[0] == pytest.approx(4.0)
    assert u[1] == pytest.approx(2 ** (-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))))


# --- token ids ----------------------------------------------------------------------------------
def test_check_token_ids_rejects_out_of_range():
    ok = np.array([[0, 3], [1, 0]])
    assert check_token_ids(ok, [2, 4], "t").tolist() == ok.tolist()
    with pytest.raises(TokenIdError, match=r"token id 4 at position t=1 .*K_t=4"):
        check_token_ids(np.array([[0, 4]]), [2, 4], "t")
    with pytest.raises(ValueError, match=r"token id -1 at position t=0"):
        check_token_ids(np.array([[0, 1], [-1, 0]]), [2, 4], "t")
    with pytest.raises(TokenIdError, match=r"expected \[N, 2\]"):
        check_token_ids(np.zeros((3, 3), dtype=int), [2, 4], "t")


class FakeTokenizer(Adapter):
    """tokens = the first L pixels // 64 (values 0..3); decode repeats them; optional bad id."""

    capabilities = frozenset({"tokenize"})
    registry_name = "test-fake"

    def __init__(self, sizes, bad=None):
        super().__init__(AdapterParams(), 0)
        self.sizes, self.bad = list(sizes), bad

    @property
    def codebook_sizes(self):
        return self.sizes

    def encode(self, images):
        z = (images.flatten(1)[:, 300:300 + len(self.sizes)].long() // 64)
        z = torch.minimum(z, torch.tensor(self.sizes) - 1)
        if self.bad is not None:
            z[0, self.bad[0]] = self.bad[1]
        return z

    def decode(self, tokens):
        return torch.full((len(tokens), 1, 28, 28), 128, dtype=torch.uint8)


def _ctx(tmp_path, metrics=()):
    logged = {}
    ds = tiny_dataset(120, 40)
    ctx = CellContext(suite=SimpleNamespace(metrics=[MetricSpec(name=k, params=p) for k, p in metrics]),
                      method=SimpleNamespace(name="fake"), seed=0, budget={}, dataset=ds, cache=None,
                      artifact_dir=tmp_path / "art", log_metric=lambda k, v, s=None: logged.setdefault(k, []).append(v),
                      log_param=lambda k, v: logged.__setitem__(k, v), progress=False)
    return ctx, logged


def test_entropy_metric_rejects_bad_ids_and_keeps_old_keys(tmp_path):
    ctx, logged = _ctx(tmp_path)
    with pytest.raises(ValueError, match=r"token id 7 at position t=2"):
        PositionEntropy().compute(FakeTokenizer([4, 4, 4], bad=(2, 7)), ctx, EntropyParams())
    with pytest.raises(TokenIdError, match=r"token id -2 at position t=0"):
        PositionEntropy().compute(FakeTokenizer([4, 4, 4], bad=(0, -2)), ctx, EntropyParams())
    out = PositionEntropy().compute(FakeTokenizer([4, 4, 4]), ctx, EntropyParams())
    z = FakeTokenizer([4, 4, 4]).encode(ctx.dataset.train.images).numpy()
    h = conditional_entropy_per_position(z)
    assert out["cliff_position"] == cliff_position(h, 0.5) and out["entropy_first_token"] == pytest.approx(h[0])
    assert out["entropy_auc"] == pytest.approx(h.sum())
    assert out["cliff_frac"] == pytest.approx(cumulative_cliff(h, 0.9))
    assert out["usage_eff_mean"] == pytest.approx(effective_usage(z).mean())
    assert len(logged["usage_eff"]) == 3 and len(logged["entropy_bits"]) == 3
    cols = PositionEntropy.columns(EntropyParams())
    assert all(cols[k].descriptive for k in out if not k.endswith("_stderr"))


def test_entropy_cliff_frac_default_is_not_hashed():
    # runs and the ci baseline from before cliff_frac keep their config hash; another value is hashed
    assert "cliff_frac" not in EntropyParams().model_dump(mode="json")
    assert EntropyParams(cliff_frac=0.8).model_dump(mode="json")["cliff_frac"] == 0.8
    assert EntropyParams.model_validate(EntropyParams().model_dump(mode="json")).cliff_frac == 0.9
    with pytest.raises(Exception):
        EntropyParams(cliff_frac=1.0)


def test_probe_logs_prefix_bits_and_information(tmp_path):
    ctx, _ = _ctx(tmp_path)
    params = probe.ProbeParams(ks=[1, 2, "all"], n_train=120, max_iter=50)
    out = probe.LinearProbe().compute(FakeTokenizer([2, 4, 4]), ctx, params)
    assert out["prefix_bits_k1"] == 1.0 and out["prefix_bits_k2"] == 3.0 and out["prefix_bits_kall"] == 5.0
    z = FakeTokenizer([2, 4, 4]).encode(ctx.dataset.train.images).numpy()
    ref = prefix_label_information(z, ctx.dataset.train.labels.numpy(), [1, 2, 3])
    assert out["mi_k2"] == pytest.approx(ref[2]["mi"]) and out["mi_kall"] == pytest.approx(ref[3]["mi"])
    assert 0 <= out["mi_k1"] <= out["mi_k2"] <= out["mi_kall"] <= 2.0 + 1e-12  # 4 classes: H(y) <= 2 bits
    cols = probe.LinearProbe.columns(params)
    assert cols["prefix_bits_k1"].descriptive and cols["mi_k2"].descriptive and not cols["probe_k1"].descriptive
    with pytest.raises(TokenIdError):
        probe.LinearProbe().compute(FakeTokenizer([2, 4, 4], bad=(1, 4)), ctx, params)


# --- reconstruction -----------------------------------------------------------------------------
def test_recon_psnr_equals_hand_computation(tmp_path):
    ctx, logged = _ctx(tmp_path, [("recon", {"n": 30})])
    out = recon.Reconstruction().compute(FakeTokenizer([2, 4, 4]), ctx, recon.ReconParams(n=30))
    x = ctx.dataset.test.images[:30].double().numpy() / 255.0
    mse_i = ((x - 128 / 255.0) ** 2).reshape(30, -1).mean(1)
    psnr_i = [10 * math.log10(1.0 / m) for m in mse_i]
    assert out["recon_mse"] == pytest.approx(float(np.mean(mse_i)), rel=1e-12)
    assert out["recon_psnr"] == pytest.approx(float(np.mean(psnr_i)), rel=1e-12)
    assert out["recon_psnr_stderr"] == pytest.approx(float(np.std(psnr_i, ddof=1) / math.sqrt(30)), rel=1e-9)
    assert out["code_bits"] == pytest.approx(5.0)
    assert logged["recon.n"] == 30
    cols = recon.Reconstruction.columns(recon.ReconParams(n=30))
    assert cols["code_bits"].descriptive and cols["recon_psnr"].higher_is_better and not cols["recon_mse"].higher_is_better


def test_recon_exact_reconstruction_is_capped():
    x = np.full((2, 1, 4, 4), 7, dtype=np.uint8)
    y = x.copy()
    y[1, 0, 0, 0] = 8
    mse, psnr = recon.per_image_errors(x, y, psnr_max=100.0)
    assert mse[0] == 0 and psnr[0] == 100.0
    assert psnr[1] == pytest.approx(10 * math.log10(16 * 255.0 ** 2))
