"""Reconstruction error of a tokenizer: MSE and PSNR of decode(encode(x)) on test images.

The reconstructions are the cell's shared input ``reconstructions(n)`` (:mod:`bench.inputs`: made
once, also used by rFD/rFID). Images as the :class:`bench.adapter.Tokenizer` contract gives them (uint8 in [0, 255]) scaled to
[0, 1]. Per image i: MSE_i = mean over pixels of (x - x_hat)^2 and PSNR_i = 10 log10(1 / MSE_i) dB
(the usual per-image PSNR of tokenizer papers, averaged over images; an exact reconstruction,
MSE_i = 0, is capped at ``psnr_max`` dB so the mean stays finite). ``recon_mse`` / ``recon_psnr``
are means over the first n test images with ``<key>_stderr`` = sample std / sqrt(n) over images.
``code_bits`` = sum_t log2 K_t, the bits one image's token sequence can carry (descriptive), so every
tokenizer row shows its capacity next to its reconstruction.
"""
from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.registry import register_metric

SE_NOTE = "stderr over test images"


class ReconParams(MetricParams):
    n: int = Field(1000, gt=0, description="first n test images (the reconstructions rFD/rFID use are shared)")
    psnr_max: float = Field(100.0, gt=0, description="dB given to an image reconstructed exactly (MSE_i = 0)")


def per_image_errors(x: np.ndarray, x_hat: np.ndarray, psnr_max: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, C, H, W] (originals, reconstructions) -> (MSE_i, PSNR_i in dB), float64 [N] each,
    on the [0, 1] scale; ValueError on a shape mismatch."""
    if x.shape != x_hat.shape:
        raise ValueError(f"reconstructions of shape {tuple(x_hat.shape)} for images of shape {tuple(x.shape)}")
    d = (x.astype(np.float64) - x_hat.astype(np.float64)) / 255.0
    mse = (d * d).reshape(len(d), -1).mean(1)
    with np.errstate(divide="ignore"):
        psnr = np.where(mse > 0, -10.0 * np.log10(np.where(mse > 0, mse, 1.0)), psnr_max)
    return mse, np.minimum(psnr, psnr_max)


@register_metric("recon")
class Reconstruction(Metric):
    """MSE / PSNR of decode(encode(x)) on test images, and the code's bits per image."""

    requires = ("tokenize",)
    Params = ReconParams

    @classmethod
    def columns(cls, params):
        n = params.n
        return {
            "recon_mse": Column(f"recon MSE (test, n={n}, [0,1] scale)", False, group="quality", short="MSE",
                                uncertainty=SE_NOTE),
            "recon_psnr": Column(f"recon PSNR (test, n={n})", True, "dB", group="quality", short="PSNR",
                                 uncertainty=SE_NOTE),
            "code_bits": Column("code bits/image (sum_t log2 K_t)", None, "bits/image", short="bits"),
        }

    @classmethod
    def inputs(cls, params):
        from bench import inputs

        return [inputs.real_test(params.n), inputs.reconstructions(params.n)]

    def compute(self, adapter, ctx, params):
        from bench import inputs

        p = inputs.provider(ctx)
        real, rec = p.get(inputs.real_test(params.n)), p.get(inputs.reconstructions(params.n), adapter)
        mse, psnr = per_image_errors(real.images.numpy(), rec.images.numpy(), params.psnr_max)
        n = len(mse)
        out = {"recon_mse": float(mse.mean()), "recon_psnr": float(psnr.mean()),
               "code_bits": float(sum(math.log2(k) for k in adapter.codebook_sizes))}
        if n > 1:
            out["recon_mse_stderr"] = float(mse.std(ddof=1) / math.sqrt(n))
            out["recon_psnr_stderr"] = float(psnr.std(ddof=1) / math.sqrt(n))
        ctx.log_param("recon.n", n)
        return check_finite(out, "recon")
