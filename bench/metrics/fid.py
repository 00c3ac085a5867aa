"""rFID/rKID (reconstructions) and gFID/gKID (samples) in TF-Inception features.

FID: Fréchet distance between Gaussians fitted to Inception pool3 features of two image sets
(Heusel et al. 2017, arXiv 1706.08500). KID: unbiased MMD^2 with the cubic polynomial kernel,
mean over random subsets (Bińkowski et al. 2018, arXiv 1801.01401). Both formulas are
torch-fidelity's own (``metric_fid`` / ``metric_kid``, defaults: 100 subsets, rng seed 2020),
so values equal ``torch_fidelity.calculate_metrics`` with the same weights.

* ``rfid``: ``adapter.decode(adapter.encode(x))`` of the first n test images vs those images.
* ``gfid``: n class-balanced samples (labels ``i % num_classes``) vs n class-balanced
  *train* images.

FID/KID are biased at small n: compare only values with equal n, extractor and resize mode
(all in the column title or logged as params). Reference features of real image sets are
cached (``results/cache/inception_ref/``), keyed by the image set's fingerprint, the weights'
sha256, the resize mode and n.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from bench.context import stable_hash
from bench.data.base import ImageSplit
from bench.metrics import images as pools
from bench.metrics import inception
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.inception import EXTRACTOR_ID, RESIZE_MODE, WEIGHTS_SHA256, inception_features
from bench.registry import register_metric

KID_SUBSETS = 100  # torch-fidelity's default
KID_RNG_SEED = 2020  # torch-fidelity's default: fixed subsets, so KID is reproducible


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (float [N, D] each, N >= 2).

    torch-fidelity's ``fid_features_to_statistics`` (mean, ``np.cov``) and
    ``fid_statistics_to_metric`` (trace of sqrt via eigenvalues of sigma_a @ sigma_b).
    Units: squared feature units. Never NaN for finite inputs; can be ~-1e-6 for equal sets.
    """
    from threadpoolctl import threadpool_limits
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(f))) for f in (feats_a, feats_b)]
    # The 2048x2048 non-symmetric eigvals (LAPACK geev) is ~4x faster single-threaded on a busy
    # 2-core machine (7 s vs 20-40 s measured): OpenBLAS threads spin against each other.
    with threadpool_limits(1, user_api="blas"):
        return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID])


def kernel_distance(feats_a: np.ndarray, feats_b: np.ndarray, subset_size: int,
                    subsets: int = KID_SUBSETS, rng_seed: int = KID_RNG_SEED) -> tuple[float, float]:
    """KID (mean, std over subsets) via torch-fidelity's ``kid_features_to_metric``.

    Features float [N, D]; ``subset_size`` <= min(N_a, N_b); polynomial kernel
    (x.y / D + 1)^3; unbiased MMD^2 estimate, may be slightly negative for equal distributions.
    The kernels are computed in float32, as torch-fidelity does (the network's own precision;
    2x faster than float64: 100 subsets of 1000 take ~15-30 s on 2 cores).
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    a, b = (torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)) for f in (feats_a, feats_b))
    out = kid_features_to_metric(a, b, kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=rng_seed,
                                 verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def reference_features(split: ImageSplit, ctx: Any, batch_size: int = 50) -> np.ndarray:
    """Inception features (float64 [N, 2048]) of a real image set, computed once and cached.

    Key: (``split.fingerprint()``, weights sha256, resize mode, N). Stored as float32,
    which is exactly what the network produced, so a cache hit returns identical values.
    """
    key = stable_hash({"what": "inception-ref-features", "images": split.fingerprint(),
                       "weights_sha256": WEIGHTS_SHA256, "resize": RESIZE_MODE, "n": len(split)})
    hit = ctx.cache.load_torch("inception_ref", key)
    if hit is not None:
        return hit["features"].double().numpy()
    feats = inception_features(split.images, batch_size=batch_size, progress=ctx.progress,
                               device=ctx.device, cache=ctx.cache)
    ctx.cache.save_torch("inception_ref", key, {
        "features": torch.from_numpy(feats.astype(np.float32)),
        "fingerprint": split.fingerprint(), "weights_sha256": WEIGHTS_SHA256, "resize": RESIZE_MODE,
    })
    return feats


class InceptionParams(MetricParams):
    """``n`` images per side; KID subsets of ``kid_subset_size`` (default min(1000, n))."""

    n: int = Field(gt=1, description="images per side (real and generated/reconstructed)")
    kid_subset_size: int | None = Field(default=None, gt=1, description="KID subset size; default min(1000, n)")
    batch_size: int = Field(default=50, gt=0, description="Inception batch size")

    @model_validator(mode="after")
    def _subset(self) -> "InceptionParams":
        if self.kid_subset_size is None:
            self.kid_subset_size = min(1000, self.n)
        elif self.kid_subset_size > self.n:
            raise ValueError(f"kid_subset_size ({self.kid_subset_size}) must be <= n ({self.n})")
        return self


class _InceptionMetric(Metric):
    """Shared body: real vs fake images -> {<p>fid, <p>kid}; subclasses pick the two sets."""

    Params: ClassVar[type[MetricParams]] = InceptionParams
    prefix: ClassVar[str] = "?"  # "r" or "g"
    image_pool: ClassVar[str] = "?"

    @classmethod
    def columns(cls, params: InceptionParams) -> dict[str, Column]:
        tag = f"({EXTRACTOR_ID}, n={params.n})"
        return {f"{cls.prefix}fid": Column(f"{cls.prefix}FID {tag}", higher_is_better=False),
                f"{cls.prefix}kid": Column(f"{cls.prefix}KID {tag}", higher_is_better=False)}

    def image_sets(self, adapter: Any, ctx: Any, params: InceptionParams) -> tuple[ImageSplit, ImageSplit]:
        """(real reference set, generated or reconstructed set), ``params.n`` images each."""
        raise NotImplementedError

    def compute(self, adapter: Any, ctx: Any, params: InceptionParams) -> dict[str, float]:
        name = self.registry_name
        real, fake = self.image_sets(adapter, ctx, params)
        f_real = reference_features(real, ctx, params.batch_size)
        f_fake = inception_features(fake.images, batch_size=params.batch_size, progress=ctx.progress,
                                    device=ctx.device, cache=ctx.cache)
        fid = frechet_distance(f_fake, f_real)
        kid, kid_std = kernel_distance(f_fake, f_real, params.kid_subset_size)
        for k, v in {**inception.provenance(), "n": params.n, "kid_subset_size": params.kid_subset_size,
                     "kid_subsets": KID_SUBSETS, "reference_fingerprint": real.fingerprint()}.items():
            ctx.log_param(f"{name}.{k}", v)
        ctx.log_metric(f"{self.prefix}kid_std", kid_std, None)
        return check_finite({f"{self.prefix}fid": fid, f"{self.prefix}kid": kid}, name)


@register_metric("rfid")
class ReconstructionFID(_InceptionMetric):
    """rFID/rKID: reconstructions of the first n test images vs those test images."""

    requires = ("tokenize",)
    prefix = "r"
    image_pool = pools.RECONSTRUCTED

    def image_sets(self, adapter, ctx, params):
        return pools.reference_test(ctx, params.n), pools.reconstructed(adapter, ctx, params.n)


class GenerationFIDParams(InceptionParams):
    """``reference``: ``train`` (n class-balanced train images) or ``adm`` (the ADM ImageNet-256
    reference batch ``VIRTUAL_imagenet256_labeled.npz``, Dhariwal & Nichol 2021, arXiv 2105.05233)."""

    reference: Literal["train", "adm"] = "train"


ADM_REF_NAME = "VIRTUAL_imagenet256_labeled.npz"


def adm_reference(ctx: Any, n: int) -> ImageSplit:
    """The first n images of the ADM reference batch (``$ADM_REF_BATCH`` or ``<data root>/{ADM_REF_NAME}``)."""
    import os
    from pathlib import Path

    from bench.errors import DatasetMissing

    path = Path(os.environ.get("ADM_REF_BATCH") or Path(ctx.dataset.source) / ADM_REF_NAME)
    if not path.exists():
        raise DatasetMissing(f"gfid reference 'adm': {path} not found. Set ADM_REF_BATCH to the ADM reference "
                             f"batch {ADM_REF_NAME} (an .npz whose arr_0 is uint8 [N, 256, 256, 3]) or place it "
                             "in the data set's root.")
    arr = np.load(path)["arr_0"][:n]
    images = torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
    return ImageSplit(images, torch.zeros(len(images), dtype=torch.long))


@register_metric("gfid")
class GenerationFID(_InceptionMetric):
    """gFID/gKID: n class-balanced samples vs n class-balanced training images (or the ADM batch)."""

    requires = ("generate",)
    Params = GenerationFIDParams
    prefix = "g"
    image_pool = pools.GENERATED

    @classmethod
    def columns(cls, params):
        cols = super().columns(params)
        if params.reference == "adm":
            cols = {k: Column(c.title.replace(")", ", vs ADM ref)"), c.higher_is_better) for k, c in cols.items()}
        return cols

    def image_sets(self, adapter, ctx, params):
        n = params.n
        real = adm_reference(ctx, n) if params.reference == "adm" else pools.reference_train_balanced(ctx, n)
        return real, pools.generated(adapter, ctx, n)
