"""rFD/gFD in Fashion-MNIST CNN features: a fast stand-in for FID on the Fashion-MNIST suite.

Same construction as FID (Fréchet distance between Gaussian fits of features, Heusel et al.
2017, arXiv 1706.08500, computed with torch-fidelity's functions) and the same image pairs
as :mod:`bench.metrics.fid`, but in the 64-d penultimate features of the small CNN of
:mod:`bench.metrics.fmnist_classifier` (thousands of images per second on CPU instead of ~5).
Values are not comparable with FID, only with fd values of the same classifier instrument id
(``classifier`` param, default ``fmnist-cnn-v1``; it is part of the config hash and the column title).

* ``rfd_fmnist``: reconstructions of the first n test images vs those test images.
* ``gfd_fmnist``: n class-balanced samples vs n class-balanced *train* images.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from bench.data.base import ImageSplit
from bench.errors import MetricError
from bench.metrics import fmnist_classifier as fc
from bench.metrics import images as pools
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.fid import frechet_distance
from bench.registry import register_metric


class FDParams(MetricParams):
    n: int = Field(gt=1, description="images per side (real and generated/reconstructed)")
    batch_size: int = Field(default=1000, gt=0, description="classifier batch size")
    classifier: str = Field(default=fc.DEFAULT_INSTRUMENT,
                            description="registered instrument id of the feature classifier (bench/instruments/)")

    @field_validator("classifier")
    @classmethod
    def _registered(cls, v: str) -> str:
        from bench import instruments

        try:
            instruments.card(v, fc.KIND)
        except instruments.InstrumentError as e:  # pydantic reports ValueErrors with the field path
            raise ValueError(str(e)) from None
        return v


def classifier_for(ctx: Any, instrument_id: str = fc.DEFAULT_INSTRUMENT) -> fc.FMNISTClassifier:
    """The shipped classifier ``instrument_id`` (a fixed file, the same on every machine)."""
    ds = ctx.dataset
    if getattr(ds, "name", None) != "fmnist" or ds.channels != 1 or ds.resolution != 28:
        raise MetricError(f"fd_fmnist metrics need the fmnist data set (1x28x28), got {getattr(ds, 'name', ds)!r}")
    return fc.load_classifier(instrument_id)


class _FDMetric(Metric):
    Params: ClassVar[type[MetricParams]] = FDParams
    prefix: ClassVar[str] = "?"
    image_pool: ClassVar[str] = "?"

    @classmethod
    def columns(cls, params: FDParams) -> dict[str, Column]:
        return {f"{cls.prefix}fd_fmnist": Column(f"{cls.prefix}FD ({params.classifier}, n={params.n})",
                                                 higher_is_better=False)}

    def image_sets(self, adapter: Any, ctx: Any, n: int) -> tuple[ImageSplit, ImageSplit]:
        raise NotImplementedError

    def compute(self, adapter: Any, ctx: Any, params: FDParams) -> dict[str, float]:
        clf = classifier_for(ctx, params.classifier)
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
