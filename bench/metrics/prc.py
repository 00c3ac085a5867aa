"""Improved precision and recall (Kynkäänniemi et al. 2019, arXiv 1904.06991, Sec. 2).

Each set's manifold is the union of balls around its feature vectors, each with the radius to its
k-th nearest neighbour in the same set (Eq. 1-2). Precision: the fraction of generated samples inside
the real manifold; recall: the fraction of real images inside the generated manifold. Computed by
torch-fidelity's own ``prc_features_to_metric`` (the paper's algorithm) on the *same features* as the
FID columns: the cell's input provider hands this metric the feature arrays it made for ``gfid`` (same
instrument, image set and batch size), so nothing is extracted twice.

``reference: adm`` uses the ADM batch's 10,000 images as the real set, as the ADM evaluator does for
precision/recall. ``steps`` / ``temperatures`` sweep like ``gfid`` (keys ``precision_temp0p85`` ...).
``<key>_stderr``: binomial, sqrt(p (1 - p) / n) over the n evaluated points given the two manifolds
(it ignores the manifolds' own sampling noise).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from bench import inputs as inp
from bench.metrics.base import Column, MetricParams, check_finite, stderr_key
from bench.metrics.frechet import GENERATION, FrechetMetric, SweepParams, TemperatureParams, point_key
from bench.registry import register_metric

FEATURE_KINDS = ("fid-inception", "fmnist-classifier", "fmnist-judge")


class PRParams(SweepParams, TemperatureParams):
    n: int = Field(gt=1, description="images per side (generated and real)")
    k: int = Field(default=3, ge=1, description="neighbourhood size: each point's radius is the distance to its k-th "
                                                "nearest neighbour in its own set (the paper uses 3)")
    instrument: str = Field(default="inception-tf", description="registered feature-extractor id (the FID columns': "
                                                                "inception-tf; fmnist-cnn-v1 ...)")
    reference: Literal["train", "adm"] = Field(default="train", description="train: n class-balanced train images; "
                                                                            "adm: the ADM reference batch's images")
    batch_size: int = Field(default=50, gt=0, description="feature extractor batch size (equal to gfid's to share "
                                                          "its features)")
    row_batch: int = Field(default=10000, gt=0, description="rows per chunk of the pairwise distance matrix (memory)")

    @field_validator("instrument")
    @classmethod
    def _registered(cls, v: str) -> str:
        from bench import instruments

        try:
            c = instruments.card(v)
        except instruments.InstrumentError as e:
            raise ValueError(str(e)) from None
        if c.kind not in FEATURE_KINDS:
            raise ValueError(f"instrument {v!r} (kind {c.kind}) is not a feature extractor ({FEATURE_KINDS})")
        return v

    @model_validator(mode="after")
    def _k_below_n(self) -> "PRParams":
        if self.k >= self.n:
            raise ValueError(f"k ({self.k}) must be < n ({self.n})")
        return self


def precision_recall(f_fake: np.ndarray, f_real: np.ndarray, k: int, row_batch: int = 10000) -> tuple[float, float]:
    """(precision, recall) in [0, 1] of generated features ``f_fake`` [N_g, D] against real ``f_real``
    [N_r, D] with neighbourhood size ``k`` < min(N_g, N_r) (torch-fidelity's ``prc_features_to_metric``)."""
    import torch
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    a, b = (torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)) for f in (f_fake, f_real))
    out = prc_features_to_metric(a, b, prc_neighborhood=k, prc_batch_size=row_batch, save_cpu_ram=True,
                                 verbose=False)
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


@register_metric("prc")
class PrecisionRecall(FrechetMetric):
    """Precision and recall of n class-balanced samples vs n class-balanced train images (or the ADM batch)."""

    requires = ("generate",)
    Params: ClassVar[type[MetricParams]] = PRParams
    pair = GENERATION

    @classmethod
    def instrument(cls, params) -> str:
        return params.instrument

    @classmethod
    def tag(cls, params) -> str:
        ref = ", vs ADM ref" if params.reference == "adm" else ""
        return f"{params.instrument}, n={params.n}, k={params.k}{ref}"

    @classmethod
    def real_input(cls, params):
        return inp.real_adm(params.n) if params.reference == "adm" else super().real_input(params)

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        cols: dict[str, Column] = {}
        for s, t in cls.points(params):
            where = "".join(f", {a}={v:g}" for a, v in (("NFE", s), ("T", t)) if v is not None)
            for key, title in (("precision", "Precision"), ("recall", "Recall")):
                k = point_key(key, s, t)
                cols[k] = Column(f"{title} ({cls.tag(params)}{where})", higher_is_better=True,
                                 uncertainty="binomial over the n points, given the k-NN manifolds")
        return cols

    def compute(self, adapter: Any, ctx: Any, params) -> dict[str, float]:
        p, inst, bs = inp.provider(ctx), params.instrument, params.batch_size
        real = self.real_input(params)
        f_real = p.get(inp.features(inst, real, bs), adapter)
        out: dict[str, float] = {}
        for s, t in self.points(params):
            f_fake = p.get(inp.features(inst, self.fake_input(params, s, t), bs), adapter)
            prec, rec = precision_recall(f_fake, f_real, params.k, params.row_batch)
            for key, v, m in (("precision", prec, len(f_fake)), ("recall", rec, len(f_real))):
                out[point_key(key, s, t)] = v
                out[stderr_key(point_key(key, s, t))] = float(np.sqrt(max(v * (1 - v), 0.0) / m))
        from bench.instruments.features import extractor

        for k, v in {**extractor(inst).provenance(), "n": params.n, "k": params.k, "reference": params.reference,
                     "n_real": len(f_real), "reference_fingerprint": p.get(real, adapter).fingerprint()}.items():
            ctx.log_param(f"prc.{k}", v)
        return check_finite(out, "prc")
