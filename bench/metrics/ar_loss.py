"""AR loss: the prior's mean cross-entropy on test-split tokens (the ``prior`` capability, ``nll``).

``ar_loss`` is nats/token averaged over positions (what the wAR-Tok/Prologue papers call AR loss);
``bits_per_image`` sums over positions and converts to bits. Per-token loss is not comparable
across different per-position codebook sizes (VCQ method note), bits per image is.
"""
from __future__ import annotations

import math

from pydantic import Field

from bench.errors import MetricError
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.registry import register_metric


SE_NOTE = "stderr over test images"  # not tokens: an image's tokens are correlated, images are the i.i.d. items


class ARLossParams(MetricParams):
    n: int | None = Field(None, gt=0, description="first n test images (None = all)")


@register_metric("ar_loss")
class ARLoss(Metric):
    """Mean CE of the AR prior on test tokens (nats/token) and bits per image."""

    requires = ("prior",)
    Params = ARLossParams

    @classmethod
    def columns(cls, params):
        return {
            "ar_loss": Column("AR loss (test)", False, "nats/token", group="likelihood", short="AR",
                              uncertainty=SE_NOTE),
            "bits_per_image": Column("NLL (test)", False, "bits/image", group="likelihood", short="NLL",
                                     uncertainty=SE_NOTE),
        }

    def compute(self, adapter, ctx, params):
        test = ctx.dataset.test.head(params.n)
        res = adapter.nll(test.images, test.labels)  # bench.adapter.NLL, nats
        nll = res.per_position  # [N, L]
        if nll is None:
            raise MetricError(f"ar_loss: {adapter.registry_name}.nll gives no per-position NLL (needed for nats/token)")
        per_pos = nll.mean(0)
        for t, v in enumerate(per_pos.tolist()):
            ctx.log_metric("ar_loss_per_position", v, t)
        ctx.log_param("ar_loss.n", len(test))
        n = nll.shape[0]
        per_image = nll.double().mean(1)  # the image's mean over positions: ar_loss is their mean
        bits = res.per_sequence.double() / math.log(2)
        out = {"ar_loss": float(nll.mean()), "bits_per_image": float(bits.mean())}
        if n > 1:  # standard error of a mean over n i.i.d. test images (ddof=1)
            out["ar_loss_stderr"] = float(per_image.std() / math.sqrt(n))
            out["bits_per_image_stderr"] = float(bits.std() / math.sqrt(n))
        return check_finite(out, "ar_loss")
