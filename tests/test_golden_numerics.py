"""Golden numerics: each metric's code pinned on fixed inputs, apart from any training noise.

The inputs are built by ``tests/golden/make_golden.py`` from integer draws scaled by powers of two
(bit-identical on every machine); the expected values are in ``tests/golden/metrics.json``. Rerun
the script only when a metric's definition changes on purpose. Each metric is checked twice: against
its golden value (catches any change to the code) and against an independent formula written here
(says the golden value is the right one, not just the old one).

Tolerances: different CPUs round differently (OpenBLAS/LAPACK kernels and numpy's SIMD ``log``
differ between AVX-512 and AVX2), so nothing float is compared with ``==`` except accuracies,
which are counts.
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import make_golden as inputs  # noqa: E402  (the fixed inputs and the calls into bench that made the JSON)

from bench.metrics.entropy import conditional_entropy_per_position  # noqa: E402
from bench.metrics.fid import KID_RNG_SEED, KID_SUBSETS  # noqa: E402

GOLDEN = json.loads(inputs.GOLDEN.read_text())

# Measured spread when the same code runs with AVX2 or SSE kernels forced instead of AVX-512
# (OPENBLAS_CORETYPE, NPY_DISABLE_CPU_FEATURES, ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA):
# FD <= 3e-14 (rank-deficient FD 5e-9: sqrt of ~1e-16 noise eigenvalues), entropy 0, KID 1e-7,
# AR loss 0, Inception features and FID 3e-7. A metric change moves them by far more.
RTOL_F64 = 1e-6  # float64 linear algebra (FD)
RTOL_ENTROPY = 1e-9  # float64 sums of count * log2(p)
# KID kernels and the AR log-softmax run in float32, as in the harness; 1e-6 still holds on these small
# inputs: the float32 results are within 1e-7 of float64 ones, so any CPU's are as well.
RTOL_F32_SMALL = 1e-6
# The Inception network is a float32 conv net of ~100 layers whose conv kernels (oneDNN) depend on
# the CPU's ISA and the library build; 1e-3 absorbs any of them yet catches a change of the
# network, its weights, the resize or the FID on top.
RTOL_INCEPTION = 1e-3


def rel(x: float, tol: float) -> pytest.approx:
    return pytest.approx(x, rel=tol, abs=0)


# --- Fréchet distance (FID's formula) -----------------------------------------------------------

def reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)), written independently of torch-fidelity."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean.real))


def reference_fd_symmetric(a: np.ndarray, b: np.ndarray) -> float:
    """Same distance via tr sqrt(S_a^1/2 S_b S_a^1/2) (symmetric PSD, eigh): well-posed when S is singular."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, u = np.linalg.eigh(s_a)
    half = (u * np.sqrt(w.clip(0))) @ u.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(half @ s_b @ half).clip(0)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)


FD_CASES = inputs.fd_cases()


@pytest.mark.parametrize("case", list(FD_CASES))
def test_frechet_distance_golden(case):
    a, b = FD_CASES[case]
    assert inputs.project_fd(a, b) == rel(GOLDEN["frechet_distance"][case], RTOL_F64)


@pytest.mark.parametrize("case", list(FD_CASES))
def test_frechet_distance_matches_independent_formula(case):
    a, b = FD_CASES[case]
    got = inputs.project_fd(a, b)
    assert got == rel(reference_fd_symmetric(a, b), RTOL_F64)
    if np.linalg.matrix_rank(np.cov(a, rowvar=False)) == a.shape[1]:  # sqrtm is ill-posed for singular S_a S_b
        assert got == rel(reference_fd(a, b), RTOL_F64)


def test_frechet_distance_of_a_shift_is_its_squared_norm():
    """Equal covariances: the trace term cancels exactly in theory, FD = ||shift||^2 (hand-checkable)."""
    a, _ = FD_CASES["n64_d16"]
    shift = np.arange(16) / 8.0  # ||shift||^2 = sum k^2 / 64 = 1240 / 64
    got = inputs.project_fd(a + shift, a)
    assert got == pytest.approx(1240 / 64, rel=0, abs=1e-9 * np.trace(np.cov(a, rowvar=False)))


# --- KID --------------------------------------------------------------------------------------

def reference_kid(a: np.ndarray, b: np.ndarray, m: int) -> tuple[float, float]:
    """Unbiased MMD^2, kernel (x.y / d + 1)^3, in float64, over torch-fidelity's subsets
    (``KID_SUBSETS`` draws of m rows per side without replacement, ``RandomState(KID_RNG_SEED)``)."""
    rng = np.random.RandomState(KID_RNG_SEED)
    d = a.shape[1]
    mmds = []
    for _ in range(KID_SUBSETS):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        off = lambda k: k.sum() - np.trace(k)  # noqa: E731
        mmds.append((off(k_xx) + off(k_yy)) / (m * (m - 1)) - 2 * k_xy.sum() / m**2)
    return float(np.mean(mmds)), float(np.std(mmds))


@pytest.mark.parametrize("case", list(inputs.KID_CASES))
def test_kid_golden_and_independent(case):
    a, b, m = inputs.kid_case(case)
    mean, std = inputs.project_kid(a, b, m)
    ref_mean, ref_std = reference_kid(a, b, m)
    gold = GOLDEN["kid"][case]
    assert mean == rel(gold["mean"], RTOL_F32_SMALL)
    assert mean == rel(ref_mean, RTOL_F32_SMALL)
    if m == len(a) == len(b):
        # every subset is the whole set: each MMD equals the full-sample one; std is float32 noise only
        assert std <= 1e-6 * mean and ref_std <= 1e-12 * ref_mean
    else:
        assert std == rel(gold["std"], RTOL_F32_SMALL)
        assert std == rel(ref_std, RTOL_F32_SMALL)


# --- per-position conditional entropy ---------------------------------------------------------

def reference_entropy(z: np.ndarray) -> list[float]:
    """H_t = sum over prefixes c of length t of (n_c / N) H(z_t | c), by counting tuples."""
    n, length = z.shape
    rows = [tuple(int(v) for v in r) for r in z]
    out = []
    for t in range(length):
        prefix = Counter(r[:t] for r in rows)
        pair = Counter(r[: t + 1] for r in rows)
        out.append(-sum(c / n * math.log2(c / prefix[p[:t]]) for p, c in pair.items()) + 0.0)
    return out


ENTROPY_CASES = inputs.entropy_cases()


@pytest.mark.parametrize("case", list(ENTROPY_CASES))
def test_entropy_golden_and_independent(case):
    h = conditional_entropy_per_position(ENTROPY_CASES[case])
    np.testing.assert_allclose(h, GOLDEN["entropy_bits"][case], rtol=RTOL_ENTROPY, atol=1e-12)
    np.testing.assert_allclose(h, reference_entropy(ENTROPY_CASES[case]), rtol=RTOL_ENTROPY, atol=1e-12)


def test_entropy_hand_checkable_cases():
    # every sequence of a full K-ary tree exactly once: each next token uniform over K -> log2 K bits at every t
    k, length = 3, 4
    full = np.array(np.meshgrid(*[np.arange(k)] * length, indexing="ij")).reshape(length, -1).T
    np.testing.assert_allclose(conditional_entropy_per_position(full), [math.log2(k)] * length, rtol=1e-12)
    # N sequences that differ in their first token: H_0 = log2 N, then every prefix is unique -> exactly 0
    distinct = np.stack([np.arange(8), np.zeros(8, int), np.arange(8) % 3], axis=1)
    h = conditional_entropy_per_position(distinct)
    assert h[0] == rel(3.0, 1e-12) and h[1] == 0.0 and h[2] == 0.0
    # one sequence repeated: nothing is uncertain
    assert conditional_entropy_per_position(np.tile([4, 1, 2], (5, 1))).tolist() == [0.0, 0.0, 0.0]
    # 2 of 4 share z_0 = 0 and then split -> H_1 = 2/4 * 1 bit; z_0 itself: p = (1/2, 1/4, 1/4) -> 1.5 bits
    h = conditional_entropy_per_position(np.array([[0, 0], [0, 1], [1, 0], [2, 0]]))
    assert h.tolist() == [pytest.approx(1.5, rel=1e-12), pytest.approx(0.5, rel=1e-12)]


# --- linear probe -----------------------------------------------------------------------------

def test_probe_accuracy_golden_exact():
    """Accuracies are counts / n: exact. make_golden.py checks no test point lies within 1e-3 of a
    decision boundary, so a CPU's rounding of the L-BFGS fit cannot flip a prediction."""
    gold = GOLDEN["probe"]
    assert inputs.project_probe_dense() == gold["dense_3class"]
    for key, acc in inputs.project_probe_onehot().items():
        assert acc == gold[f"onehot_{key}"], key


# --- AR loss (nats/token) and bits per image --------------------------------------------------

def test_ar_loss_golden():
    nll = inputs.project_ar_nll(*inputs.ar_case())
    gold = GOLDEN["ar_loss"]
    np.testing.assert_allclose(nll.mean(0).double().numpy(), gold["nll_per_position_mean"], rtol=RTOL_F32_SMALL)
    out = inputs.project_ar_loss(nll)
    assert out["ar_loss"] == rel(gold["ar_loss"], RTOL_F32_SMALL)
    assert out["bits_per_image"] == rel(gold["bits_per_image"], RTOL_F32_SMALL)


def test_ar_loss_matches_cross_entropy():
    """Independent: F.cross_entropy in float64 on the logits masked to the first K_t codes."""
    logits, tokens, labels, allowed = inputs.ar_case()
    b, length, v = logits.shape
    masked = logits.double().masked_fill(~allowed, float("-inf"))
    ce = F.cross_entropy(masked.reshape(-1, v), tokens.reshape(-1), reduction="none").view(b, length)
    out = inputs.project_ar_loss(inputs.project_ar_nll(logits, tokens, labels, allowed))
    assert out["ar_loss"] == rel(float(ce.mean()), RTOL_F32_SMALL)
    assert out["bits_per_image"] == rel(float(ce.sum(1).mean()) / math.log(2), RTOL_F32_SMALL)
    # the mask matters: without it the loss is larger (positions with K_t < V lose probability mass)
    assert float(F.cross_entropy(logits.reshape(-1, v), tokens.reshape(-1))) > out["ar_loss"] + 0.1


# --- the FID pipeline end to end (TF-Inception features -> FID) --------------------------------

@pytest.fixture(scope="module")
def inception_cache(tmp_path_factory):
    from bench.context import Cache
    from bench.metrics.inception import InceptionWeightsMissing, weights_path

    try:
        weights_path()
    except InceptionWeightsMissing as e:
        pytest.skip(f"TF-Inception FID weights absent: {e}")
    return Cache(tmp_path_factory.mktemp("golden-cache"))


def test_inception_fid_golden(inception_cache):
    """8 synthetic 28x28 images -> Inception pool3 features -> FID(first 4, last 4) (~10 s on 2 cores)."""
    torch.set_num_threads(1)
    got = inputs.project_inception(inception_cache)
    gold = GOLDEN["inception"]
    np.testing.assert_allclose(got["feature_norms"], gold["feature_norms"], rtol=RTOL_INCEPTION)
    assert got["fid_4_vs_4"] == rel(gold["fid_4_vs_4"], RTOL_INCEPTION)


def test_fmnist_cnn_instrument_golden():
    """The shipped fmnist-cnn-v1 (a file with a sha256, the same on every machine) on 8 fixed images."""
    torch.set_num_threads(1)
    got = inputs.project_fmnist_cnn()
    gold = GOLDEN["fmnist_cnn_v1"]
    assert got["weights_sha256"] == gold["weights_sha256"]
    np.testing.assert_allclose(got["feature_norms"], gold["feature_norms"], rtol=RTOL_INCEPTION)
    assert got["fd_4_vs_4"] == rel(gold["fd_4_vs_4"], RTOL_INCEPTION)
