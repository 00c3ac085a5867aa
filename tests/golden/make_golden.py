"""Recompute ``tests/golden/metrics.json``: the metric code's values on fixed inputs.

``tests/test_golden_numerics.py`` checks the metric functions against these values, so that a
change in a metric's code is caught exactly, apart from any training noise. Rerun this script
ONLY when a metric's definition changes on purpose, and say so in the commit message::

    .venv/bin/python tests/golden/make_golden.py
    git diff tests/golden/metrics.json      # every changed number must be one you meant to change

If a golden test fails and you did not mean to change a metric, fix the code, not this file.

The inputs are built from integer draws (numpy ``default_rng(seed).integers``) scaled by powers
of two, so they are bit-identical on every machine and need no stored arrays. Only the metric's
own arithmetic rounds differently between CPUs (BLAS/LAPACK kernels, SIMD ``log``/``exp``,
AVX-512 vs AVX2); the tolerances in the test absorb that, nothing else.
The Inception entry needs the FID weights (``make install``); the script stops if they are absent.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN = Path(__file__).with_name("metrics.json")


# --- fixed inputs (shared with the test) -------------------------------------------------------

def dyadic(rng: np.random.Generator, shape: tuple[int, ...], lim: int = 512, scale: int = 256) -> np.ndarray:
    """Integers in [-lim, lim] / scale: float64 values that are exact on every machine."""
    return rng.integers(-lim, lim + 1, size=shape).astype(np.float64) / scale


def _gaussianish(seed: int, n: int, d: int, shift: float, mix_seed: int | None) -> np.ndarray:
    """[n, d] features: dyadic noise (sum of 4 uniforms, bell-shaped), optionally mixed by an integer
    matrix / 8 (a non-diagonal covariance), plus a mean shift. Every product is exact in float64."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 129, size=(4, n, d)).sum(0)  # int64
    if mix_seed is not None:
        m = np.random.default_rng(mix_seed).integers(-8, 9, size=(d, d))
        x = x @ m  # int64: exact
        return x.astype(np.float64) / (256 * 8) + shift
    return x.astype(np.float64) / 256 + shift


def fd_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs (feats_a, feats_b) for the Fréchet distance: different means and covariances."""
    return {
        "n64_d8": (_gaussianish(1, 64, 8, 0.0, None), _gaussianish(2, 64, 8, 0.25, 11)),
        "n64_d16": (_gaussianish(3, 64, 16, 0.0, 12), _gaussianish(4, 64, 16, -0.125, 13)),
        # n < d: both covariances have rank n - 1 = 11 < 16 (singular, as FID at small n in 2048-d)
        "n12_d16_rank_deficient": (_gaussianish(5, 12, 16, 0.0, None), _gaussianish(6, 12, 16, 0.5, 14)),
    }


# KID: (n, d, subset_size); subsets and rng seed are bench.metrics.fid's defaults (torch-fidelity's).
KID_CASES = {"n64_d16_subset32": (64, 16, 32), "n48_d16_subset48_all": (48, 16, 48)}


def kid_case(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(feats_a, feats_b, subset_size); the values are exact in float32 (KID's precision)."""
    n, d, subset = KID_CASES[name]
    seed = 20 + list(KID_CASES).index(name)
    a = _gaussianish(seed, n, d, 0.0, None)
    b = _gaussianish(seed + 100, n, d, 0.5, 15)
    assert np.array_equal(a.astype(np.float32).astype(np.float64), a)
    assert np.array_equal(b.astype(np.float32).astype(np.float64), b)
    return a, b, subset


def entropy_cases() -> dict[str, np.ndarray]:
    """Integer token arrays [N, L] with repeated prefixes (non-trivial H_t at several t)."""
    rng = np.random.default_rng(30)
    small_vocab = rng.integers(0, 4, size=(200, 6))
    # VCQ-like: position t uses the first K_t codes, K_t = 2, 4, 8, ...; skewed (squared uniform) codes
    sizes = [2, 4, 8, 16, 32, 64]
    u = np.random.default_rng(31).integers(0, 2**20, size=(300, len(sizes))) / 2**20
    vcq_like = np.floor(np.array(sizes) * u**2).astype(np.int64)
    # duplicated sequences: 40 distinct rows, each repeated 1-5 times, shuffled; H_t stays > 0 to the end
    base = np.random.default_rng(32).integers(0, 8, size=(40, 5))
    reps = np.random.default_rng(33).integers(1, 6, size=40)
    dup = np.repeat(base, reps, axis=0)[np.random.default_rng(34).permutation(int(reps.sum()))]
    return {"n200_l6_k4": small_vocab, "n300_vcq_like": vcq_like, "n_dup_l5_k8": dup}


def probe_dense_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """3 overlapping Gaussian-ish classes in 6-d: (train_x, train_y, test_x, test_y), accuracy < 1."""
    rng = np.random.default_rng(40)
    means = rng.integers(-2, 3, size=(3, 6)).astype(np.float64)
    y_tr, y_te = np.arange(150) % 3, np.arange(90) % 3
    x_tr = means[y_tr] + _gaussianish(41, 150, 6, 0.0, None) * 2
    x_te = means[y_te] + _gaussianish(42, 90, 6, 0.0, None) * 2
    return x_tr, y_tr, x_te, y_te


PROBE_SIZES = [4, 8, 8, 16]  # per-position codebook sizes of the one-hot case


def probe_onehot_tokens() -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Tokens int64 [N, 4] whose first tokens carry the label noisily; (train_tok, train_y, test_tok, test_y)."""
    rng = np.random.default_rng(43)
    y = np.arange(240) % 4
    tok = np.stack([rng.integers(0, k, size=240) for k in PROBE_SIZES], axis=1)
    keep = rng.integers(0, 10, size=(240, 2)) < 6  # 60 %: position 0/1 tell the class
    tok[:, 0] = np.where(keep[:, 0], y, tok[:, 0])
    tok[:, 1] = np.where(keep[:, 1], 2 * y + 1, tok[:, 1])
    t = torch.from_numpy(tok)
    return t[:160], y[:160], t[160:], y[160:]


PROBE_KS = [1, 2, 4]

# AR loss: batch, length, vocabulary, per-position allowed codes K_t (VCQ-style masked logits).
AR_SHAPE = (6, 5, 16)
AR_SIZES = [2, 4, 8, 16, 16]


def ar_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits float32 [B, L, V], tokens int64 [B, L] with z_t < K_t, labels [B], allowed bool [L, V])."""
    b, length, v = AR_SHAPE
    rng = np.random.default_rng(50)
    logits = torch.from_numpy((rng.integers(-1024, 1025, size=(b, length, v)) / 256).astype(np.float32))
    tokens = torch.from_numpy(np.stack([rng.integers(0, k, size=b) for k in AR_SIZES], axis=1))
    labels = torch.from_numpy(rng.integers(0, 3, size=b))
    allowed = torch.arange(v)[None, :] < torch.tensor(AR_SIZES)[:, None]
    return logits, tokens, labels, allowed


def inception_images() -> torch.Tensor:
    """8 synthetic uint8 [8, 1, 28, 28] images: 4 horizontal and 4 vertical gradient-and-blob patterns + noise."""
    rng = np.random.default_rng(60)
    yy, xx = np.mgrid[0:28, 0:28]
    out = []
    for i in range(8):
        ramp = xx if i < 4 else yy
        img = ramp * (6 + i) + 40 * ((xx - 4 - 3 * i) ** 2 + (yy - 14) ** 2 < 30)
        img = img + rng.integers(0, 32, size=(28, 28))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(out)[:, None])


# --- the project's metric code on those inputs -------------------------------------------------

def project_fd(a: np.ndarray, b: np.ndarray) -> float:
    from bench.metrics.fid import frechet_distance

    return frechet_distance(a, b)


def project_kid(a: np.ndarray, b: np.ndarray, subset: int) -> tuple[float, float]:
    from bench.metrics.fid import kernel_distance

    return kernel_distance(a, b, subset)


def project_probe_dense() -> float:
    from bench.metrics.probe import ProbeParams, probe_accuracy

    p = ProbeParams()
    return probe_accuracy(*probe_dense_case(), p.C, p.max_iter, seed=0)


def project_probe_onehot() -> dict[str, float]:
    """bench.metrics.probe's own one-hot features and probe, first k tokens, for k in PROBE_KS."""
    from bench.metrics.probe import ProbeParams, _features, probe_accuracy, probe_key

    p = ProbeParams()
    tr, y_tr, te, y_te = probe_onehot_tokens()
    return {probe_key(k): probe_accuracy(_features(None, tr, k, "onehot", PROBE_SIZES), y_tr,
                                         _features(None, te, k, "onehot", PROBE_SIZES), y_te, p.C, p.max_iter, seed=0)
            for k in PROBE_KS}


def project_ar_nll(logits: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``ARPrior.nll`` (its masking, log-softmax and gather) with the transformer's output replaced by ``logits``."""
    from adapters.tokenizers.ar_prior import ARPrior, PriorConfig

    b, length, v = logits.shape
    torch.manual_seed(0)
    prior = ARPrior(v, length, 3, PriorConfig(width=8, layers=1, heads=2), allowed=allowed)

    def fixed_logits(embeds: torch.Tensor) -> torch.Tensor:
        assert embeds.shape[:2] == (b, length), embeds.shape  # [class, z_1..z_{L-1}] -> L positions
        return logits

    prior.logits_from_embeds = fixed_logits
    with torch.no_grad():
        return prior.nll(tokens, labels)


def project_ar_loss(nll: torch.Tensor) -> dict[str, float]:
    """``ARLoss.compute`` on an adapter whose ``nll`` returns per-position ``nll`` [N, L]."""
    from types import SimpleNamespace

    from bench.adapter import NLL
    from bench.data.base import ImageSplit
    from bench.metrics.ar_loss import ARLoss, ARLossParams

    n = len(nll)
    test = ImageSplit(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.zeros(n, dtype=torch.long))
    adapter = SimpleNamespace(nll=lambda images, labels: NLL.from_positions(nll), registry_name="golden")
    ctx = SimpleNamespace(dataset=SimpleNamespace(test=test), log_metric=lambda *a: None, log_param=lambda *a: None)
    return ARLoss().compute(adapter, ctx, ARLossParams())


def project_inception(cache=None) -> dict:
    """TF-Inception features of :func:`inception_images` -> FID(first 4, last 4) and per-image feature norms."""
    from bench.metrics.fid import frechet_distance
    from bench.metrics.inception import inception_features

    feats = inception_features(inception_images(), batch_size=8, progress=False, device="cpu", cache=cache)
    return {"fid_4_vs_4": frechet_distance(feats[:4], feats[4:]),
            "feature_norms": np.linalg.norm(feats, axis=1).tolist()}


def project_fmnist_cnn() -> dict:
    """Shipped fmnist-cnn-v1 features of :func:`inception_images` -> FD(first 4, last 4), per-image norms,
    predicted classes: pins the instrument file and the feature code, not only the Fréchet formula."""
    from bench.metrics.fid import frechet_distance
    from bench.metrics.fmnist_classifier import load_classifier

    clf = load_classifier("fmnist-cnn-v1")
    imgs = inception_images()
    feats = clf.features(imgs)
    return {"fd_4_vs_4": frechet_distance(feats[:4], feats[4:]),
            "feature_norms": np.linalg.norm(feats, axis=1).tolist(),
            "weights_sha256": clf.weights_sha256}


def _probe_margin_ok() -> None:
    """Accuracy is pinned exactly, so no test point may sit near a decision boundary: refit the same
    model and require a top-1 vs top-2 score gap far above any cross-CPU rounding of the fit."""
    from sklearn.linear_model import LogisticRegression

    from bench.metrics.probe import ProbeParams, _features

    p = ProbeParams()
    x_tr, y_tr, x_te, y_te = probe_dense_case()
    tr, oy_tr, te, oy_te = probe_onehot_tokens()
    sets = [(x_tr, y_tr, x_te, "dense")] + [
        (_features(None, tr, k, "onehot", PROBE_SIZES), oy_tr, _features(None, te, k, "onehot", PROBE_SIZES), f"k{k}")
        for k in PROBE_KS]
    for xtr, ytr, xte, name in sets:
        s = np.sort(LogisticRegression(C=p.C, max_iter=p.max_iter, random_state=0).fit(xtr, ytr).decision_function(xte), 1)
        # Tokens identical on the first k positions get identical scores (gap 0) but also the same
        # prediction: ties are broken by class order, the same on every machine. Other gaps must be large.
        gaps = s[:, -1] - s[:, -2]
        gap = float(np.min(gaps[gaps > 1e-9], initial=np.inf))
        if gap < 1e-3:
            raise SystemExit(f"probe case {name}: a test point is within {gap:.2e} of a decision boundary; "
                             "change the case's seed (its accuracy would not be exact across CPUs)")


def compute_all() -> dict:
    from bench.metrics.entropy import conditional_entropy_per_position

    _probe_margin_ok()
    nll = project_ar_nll(*ar_case())
    out = {
        "_about": "Golden values of the metric code on fixed inputs; made by tests/golden/make_golden.py "
                  "(its docstring says when to rerun it). Checked by tests/test_golden_numerics.py.",
        "frechet_distance": {k: project_fd(a, b) for k, (a, b) in fd_cases().items()},
        "kid": {k: dict(zip(("mean", "std"), project_kid(*kid_case(k)))) for k in KID_CASES},
        "entropy_bits": {k: conditional_entropy_per_position(z).tolist() for k, z in entropy_cases().items()},
        "probe": {"dense_3class": project_probe_dense(), **{f"onehot_{k}": v for k, v in project_probe_onehot().items()}},
        "ar_loss": {"nll_per_position_mean": nll.mean(0).double().tolist(), **project_ar_loss(nll)},
        "inception": project_inception(),
        "fmnist_cnn_v1": project_fmnist_cnn(),
    }
    return out


def main() -> None:
    torch.set_num_threads(1)
    values = compute_all()
    GOLDEN.write_text(json.dumps(values, indent=1) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
