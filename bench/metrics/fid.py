"""rFID/rKID (reconstructions) and gFID/gKID (samples) in TF-Inception features.

Members of the Fréchet family (:mod:`bench.metrics.frechet`, which holds the FID/KID formulas:
torch-fidelity's own, so values equal ``torch_fidelity.calculate_metrics`` with the same weights)
with the registered instrument ``inception-tf`` (:mod:`bench.instruments.features`):

* ``rfid``: ``adapter.decode(adapter.encode(x))`` of the first n test images vs those images.
* ``gfid``: n class-balanced samples (labels ``i % num_classes``) vs n class-balanced
  *train* images, or (``reference: adm``) vs the ADM reference batch's precomputed ``mu``/``sigma``
  (its full-training-set statistics, as the ADM evaluator does; :mod:`bench.metrics.adm_stats`; gKID
  still uses the batch's images); ``steps: [...]`` sweeps the sampler's NFE, ``temperatures: [...]``
  the sampling temperature.
* ``rfid_clean`` / ``gfid_clean``: the same with clean-fid's "clean" resize (instrument
  ``inception-tf-clean``, :mod:`bench.metrics.inception_clean`): own keys, titles and config hash, never
  mixed with the TF1-resize columns. FID only (no KID), and no ``reference: adm`` (the batch's
  statistics were made with the TF1 resize).

FID/KID are biased at small n: compare only values with equal n, extractor and resize mode
(all in the column title or logged as params). Reference features of real image sets are
cached (``results/cache/inception_ref/``), keyed by the image set's fingerprint, the weights'
sha256, the resize mode and n.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from bench import inputs as inp
from bench.data.base import ImageSplit
from bench.inputs import ADM_REF_NAME, adm_reference  # noqa: F401  (re-exported)
from bench.metrics.base import Column, MetricParams
from bench.metrics.frechet import (GENERATION, KID_RNG_SEED, KID_SUBSETS, RECONSTRUCTION,  # noqa: F401
                                   FrechetMetric, SweepParams, TemperatureParams, frechet_distance,
                                   kernel_distance)
from bench.registry import register_metric

EXTRACTOR_ID = "inception-tf"
"""= :data:`bench.metrics.inception.EXTRACTOR_ID` (not imported: that module loads torch, and
checking a suite must not; tests/test_light_validate.py checks they are equal)."""
FEATURE_DIM = 2048  # = bench.metrics.inception.FEATURE_DIM (not imported: it loads torch)
BOOTSTRAP_RESAMPLES = 20  # FID stderr resamples (n < FEATURE_DIM): ~3 s at n=200 on the loaded 2-core machine
CLEAN_EXTRACTOR_ID = "inception-tf-clean"
"""The same network behind clean-fid's resize (card ``bench/instruments/inception-tf-clean.json``)."""


def reference_features(split: ImageSplit, ctx: Any, batch_size: int = 50) -> np.ndarray:
    """Inception features (float64 [N, 2048]) of a real image set, computed once and cached.

    Key: (``split.fingerprint()``, weights sha256, resize mode, N). Stored as float32,
    which is exactly what the network produced, so a cache hit returns identical values.
    """
    from bench.instruments.features import extractor

    return extractor(EXTRACTOR_ID).features(split, batch_size, ctx, real=True)


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


class _InceptionMetric(FrechetMetric):
    """``<key>_stderr``: seeded bootstrap over the images of both sets (:data:`BOOTSTRAP_RESAMPLES`
    resamples of the already-extracted features), while n < 2048 = the feature dimension, where one
    resampled distance is an SVD of an n x n matrix (:mod:`bench.metrics.frechet_lowrank`, ~0.15 s at
    n=200); from n >= 2048 on each costs a 2048-d eigenproblem (seconds), so no stderr is logged.
    KID: its std over subsets is logged as ``<prefix>kid_std`` only when a subset is smaller than the sets."""

    Params: ClassVar[type[MetricParams]] = InceptionParams
    base, title, kid = "fid", "FID", True
    bootstrap_resamples = BOOTSTRAP_RESAMPLES

    @classmethod
    def resamples(cls, params) -> int:
        return cls.bootstrap_resamples if params.n < FEATURE_DIM else 0

    @classmethod
    def instrument(cls, params) -> str:
        return EXTRACTOR_ID  # the card id equals the extractor's short name in column titles


@register_metric("rfid")
class ReconstructionFID(_InceptionMetric):
    """rFID/rKID: reconstructions of the first n test images vs those test images."""

    requires = ("tokenize",)
    pair, prefix = RECONSTRUCTION, "r"


class GenerationFIDParams(InceptionParams, SweepParams, TemperatureParams):
    """``reference``: ``train`` (n class-balanced train images) or ``adm`` (the ADM ImageNet-256
    reference batch ``VIRTUAL_imagenet256_labeled.npz``, Dhariwal & Nichol 2021, arXiv 2105.05233:
    FID against its precomputed ``mu``/``sigma``, KID against its images)."""

    reference: Literal["train", "adm"] = Field(
        default="train", description="train: n class-balanced train images; adm: the ADM reference batch "
                                     "(FID vs its mu/sigma)")


@register_metric("gfid")
class GenerationFID(_InceptionMetric):
    """gFID/gKID: n class-balanced samples vs n class-balanced training images (or the ADM batch)."""

    requires = ("generate",)
    Params = GenerationFIDParams
    pair, prefix = GENERATION, "g"

    @classmethod
    def columns(cls, params):
        cols = super().columns(params)
        if getattr(params, "reference", "train") == "adm":
            cols = {k: replace(c, title=c.title.replace(")", ", vs ADM ref)")) if "FID" in c.title
                    or "KID" in c.title else c for k, c in cols.items()}
        return cols

    @classmethod
    def real_input(cls, params):
        return inp.real_adm(params.n) if getattr(params, "reference", "train") == "adm" else super().real_input(params)

    @classmethod
    def resamples(cls, params) -> int:
        """No image bootstrap against the ADM statistics (the reference side is fixed, not resampled images)."""
        if getattr(params, "reference", "train") == "adm":
            return 0
        base = getattr(super(), "resamples", None)
        return base(params) if base is not None else cls.bootstrap_resamples

    def distance(self, f_fake, f_real, ctx, params) -> float:
        if getattr(params, "reference", "train") != "adm":
            return super().distance(f_fake, f_real, ctx, params)
        from bench.metrics.adm_stats import frechet_distance_to_statistics, reference_statistics

        return frechet_distance_to_statistics(f_fake, reference_statistics(inp.adm_path(ctx)))

    def compute(self, adapter, ctx, params):
        out = super().compute(adapter, ctx, params)
        if getattr(params, "reference", "train") == "adm":
            from bench.metrics.adm_stats import reference_statistics

            ctx.log_param(f"{self.registry_name}.reference_stats", "ADM batch mu/sigma (full training set)")
            ctx.log_param(f"{self.registry_name}.reference_npz_sha256", reference_statistics(inp.adm_path(ctx)).sha256)
        return out


class CleanFIDParams(MetricParams):
    """``n`` images per side (FID only: the clean members compute no KID)."""

    n: int = Field(gt=1, description="images per side (real and generated/reconstructed)")
    batch_size: int = Field(default=50, gt=0, description="Inception batch size")


class CleanGenerationFIDParams(CleanFIDParams, SweepParams, TemperatureParams):
    """n class-balanced samples vs n class-balanced train images, clean resize (no ADM reference:
    its statistics were made with the TF1 resize, so they would mix the two modes)."""


class _Clean:
    base, title, kid = "fid_clean", "FID", False
    bootstrap_resamples = 0

    @classmethod
    def instrument(cls, params) -> str:
        return CLEAN_EXTRACTOR_ID

    @classmethod
    def resamples(cls, params) -> int:
        return 0  # 2048-d: seconds per resample


@register_metric("rfid_clean")
class ReconstructionFIDClean(_Clean, ReconstructionFID):
    """rFID with clean-fid's resize: reconstructions of the first n test images vs those images."""

    Params = CleanFIDParams


@register_metric("gfid_clean")
class GenerationFIDClean(_Clean, GenerationFID):
    """gFID with clean-fid's resize: n class-balanced samples vs n class-balanced training images."""

    Params = CleanGenerationFIDParams
