"""rFD/gFD in Fashion-MNIST CNN features: a fast stand-in for FID on the Fashion-MNIST suite.

Same construction as FID (Fréchet distance between Gaussian fits of features, Heusel et al.
2017, arXiv 1706.08500, computed with torch-fidelity's functions) and the same image pairs
as :mod:`bench.metrics.fid`, but in the 64-d penultimate features of the small CNN of
:mod:`bench.metrics.fmnist_classifier` (thousands of images per second on CPU instead of ~5).
Values are not comparable with FID, only with fd values of the same classifier sha256.

* ``rfd_fmnist``: reconstructions of the first n test images vs those test images.
* ``gfd_fmnist``: n class-balanced samples vs n class-balanced *train* images.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from bench.data.base import ImageSplit
from bench.data.fmnist import fmnist_dir, load_split
from bench.errors import MetricError
from bench.metrics import fmnist_classifier as fc
from bench.metrics import images as pools
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.fid import frechet_distance
from bench.registry import register_metric


class FDParams(MetricParams):
    n: int = Field(gt=1, description="images per side (real and generated/reconstructed)")
    batch_size: int = Field(default=1000, gt=0, description="classifier batch size")


def classifier_for(ctx: Any) -> fc.FMNISTClassifier:
    """The cached classifier, trained on the *full* Fashion-MNIST train split (not the suite's head).

    The suite may truncate its splits (``dataset.n_train``); the instrument must not change with that.
    """
    ds = ctx.dataset
    if getattr(ds, "name", None) != "fmnist" or ds.channels != 1 or ds.resolution != 28:
        raise MetricError(f"fd_fmnist metrics need the fmnist data set (1x28x28), got {getattr(ds, 'name', ds)!r}")
    train, test = _full_splits(str(fmnist_dir(getattr(ds, "source", None))))
    return fc.get_classifier(train, test, cache=ctx.cache, progress=ctx.progress)


@lru_cache(maxsize=1)
def _full_splits(root: str) -> tuple[ImageSplit, ImageSplit]:
    """The full Fashion-MNIST train and test splits (read once per process, ~2 s)."""
    return load_split(Path(root), "train"), load_split(Path(root), "test")


class _FDMetric(Metric):
    Params: ClassVar[type[MetricParams]] = FDParams
    prefix: ClassVar[str] = "?"
    image_pool: ClassVar[str] = "?"

    @classmethod
    def columns(cls, params: FDParams) -> dict[str, Column]:
        return {f"{cls.prefix}fd_fmnist": Column(f"{cls.prefix}FD ({fc.EXTRACTOR_ID}, n={params.n})",
                                                 higher_is_better=False)}

    def image_sets(self, adapter: Any, ctx: Any, n: int) -> tuple[ImageSplit, ImageSplit]:
        raise NotImplementedError

    def compute(self, adapter: Any, ctx: Any, params: FDParams) -> dict[str, float]:
        clf = classifier_for(ctx)
        real, fake = self.image_sets(adapter, ctx, params.n)
        fd = frechet_distance(clf.features(fake.images, params.batch_size), clf.features(real.images, params.batch_size))
        for k, v in {**clf.provenance(), "n": params.n, "reference_fingerprint": real.fingerprint()}.items():
            ctx.log_param(f"{self.registry_name}.{k}", v)
        return check_finite({f"{self.prefix}fd_fmnist": fd}, self.registry_name)


@register_metric("rfd_fmnist")
class ReconstructionFD(_FDMetric):
    """rFD: reconstructions of the first n test images vs those test images (CNN features)."""

    requires = ("tokenize",)
    prefix = "r"
    image_pool = pools.RECONSTRUCTED

    def image_sets(self, adapter, ctx, n):
        return pools.reference_test(ctx, n), pools.reconstructed(adapter, ctx, n)


@register_metric("gfd_fmnist")
class GenerationFD(_FDMetric):
    """gFD: n class-balanced samples vs n class-balanced training images (CNN features)."""

    requires = ("generate",)
    prefix = "g"
    image_pool = pools.GENERATED

    def image_sets(self, adapter, ctx, n):
        return pools.reference_train_balanced(ctx, n), pools.generated(adapter, ctx, n)
