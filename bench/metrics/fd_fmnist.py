"""rFD/gFD in Fashion-MNIST CNN features: a fast stand-in for FID on the Fashion-MNIST suite.

Same construction as FID (Fréchet distance between Gaussian fits of features, Heusel et al.
2017, arXiv 1706.08500, computed with torch-fidelity's functions) and the same image pairs
as :mod:`bench.metrics.fid` (both are members of :mod:`bench.metrics.frechet`), but in the 64-d
penultimate features of the small CNN of :mod:`bench.metrics.fmnist_classifier` (thousands of
images per second on CPU instead of ~5). Values are not comparable with FID, only with fd values
of the same classifier instrument id (``classifier`` param, default ``fmnist-cnn-v1``; it is part
of the config hash and the column title).

* ``rfd_fmnist``: reconstructions of the first n test images vs those test images.
* ``gfd_fmnist``: n class-balanced samples vs n class-balanced *train* images; ``steps: [...]``
  sweeps the sampler's NFE, ``temperatures: [...]`` the sampling temperature.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from bench.metrics.base import MetricParams
from bench.metrics.frechet import GENERATION, RECONSTRUCTION, FrechetMetric, SweepParams, TemperatureParams
from bench.registry import register_metric

if TYPE_CHECKING:
    from bench.metrics import fmnist_classifier as fc

KIND = "fmnist-classifier"
DEFAULT_INSTRUMENT = "fmnist-cnn-v1"
# = fmnist_classifier.KIND / DEFAULT_INSTRUMENT, not imported from there (it loads torch, and checking
# a suite must not); tests/test_light_validate.py checks they are equal.


class FDParams(MetricParams):
    n: int = Field(gt=1, description="images per side (real and generated/reconstructed)")
    batch_size: int = Field(default=1000, gt=0, description="classifier batch size")
    classifier: str = Field(default=DEFAULT_INSTRUMENT,
                            description="registered instrument id of the feature classifier (bench/instruments/)")

    @field_validator("classifier")
    @classmethod
    def _registered(cls, v: str) -> str:
        from bench import instruments

        try:
            instruments.card(v, KIND)
        except instruments.InstrumentError as e:  # pydantic reports ValueErrors with the field path
            raise ValueError(str(e)) from None
        return v


class GenerationFDParams(FDParams, SweepParams, TemperatureParams):
    """:class:`FDParams` plus ``steps`` (the NFE sweep) and ``temperatures`` (the sampling-temperature sweep)."""


def classifier_for(ctx: Any, instrument_id: str = DEFAULT_INSTRUMENT) -> fc.FMNISTClassifier:
    """The shipped classifier ``instrument_id`` (a fixed file, the same on every machine)."""
    from bench.instruments.features import extractor
    from bench.metrics import fmnist_classifier as fc

    extractor(instrument_id).check(ctx)
    return fc.load_classifier(instrument_id)


class _FDMetric(FrechetMetric):
    Params: ClassVar[type[MetricParams]] = FDParams
    base, title = "fd_fmnist", "FD"
    bootstrap_resamples = 100  # 64-d features, n=500: ~40 ms per distance on the loaded 2-core machine (~4 s)

    @classmethod
    def instrument(cls, params) -> str:
        return params.classifier


@register_metric("rfd_fmnist")
class ReconstructionFD(_FDMetric):
    """rFD: reconstructions of the first n test images vs those test images (CNN features)."""

    requires = ("tokenize",)
    pair, prefix = RECONSTRUCTION, "r"


@register_metric("gfd_fmnist")
class GenerationFD(_FDMetric):
    """gFD: n class-balanced samples vs n class-balanced training images (CNN features)."""

    requires = ("generate",)
    Params = GenerationFDParams
    pair, prefix = GENERATION, "g"
