"""Linear probe on the first k tokens (VCQ arXiv 2605.06207 abstract: k = 10; Prologue arXiv 2605.06137).

Multinomial logistic regression (scikit-learn) on the first k tokens of the sequence the AR model
sees, fit on train images, top-1 accuracy on test images. Features: one-hot token indices
(``onehot``, sparse) or the tokens' code vectors (``codes``: the optional ``code_vectors`` member of
the :class:`bench.adapter.Tokenizer` contract).

Next to each probe@k, two descriptive columns so that a comparison at equal k is not just one of
capacity: ``prefix_bits_k<k>`` = sum_{s<k} log2 K_s (what the first k tokens can carry) and
``mi_k<k>`` = plug-in I(y; z_<k) in bits on the probe's train tokens, from the same prefix grouping
as the ``entropy`` metric (:func:`bench.metrics.token_stats.prefix_label_information`). The
plug-in estimate is biased upwards, by about (R_yz - R_y - R_z + 1) / (2 N ln 2) bits to first
order (R = occupied cells; logged as ``mi_k<k>_bias``, with ``mi_k<k>_groups`` = distinct prefixes);
once the prefixes are (nearly) unique among the N = n_train sequences it tends to H(y) = log2 10
whatever the tokens mean. Read it at small k, against N.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.token_stats import check_token_ids, prefix_bits, prefix_label_information
from bench.registry import register_metric

if TYPE_CHECKING:  # torch, scikit-learn and scipy are imported where used: checking a suite loads none
    import torch


class ProbeParams(MetricParams):
    ks: list[Annotated[int, Field(ge=1)] | Literal["all"]] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, "all"], min_length=1,
        description="probe on the first k tokens, for each k (k >= 1, or 'all')")
    features: Literal["onehot", "codes"] = "onehot"
    n_train: int = Field(10000, gt=0)
    n_test: int | None = Field(None, gt=0)
    C: float = Field(1.0, gt=0, description="inverse L2 regularisation strength")
    max_iter: int = Field(300, gt=0)

    @field_validator("ks")
    @classmethod
    def _distinct(cls, v: list) -> list:
        dup = sorted({str(k) for k in v if v.count(k) > 1})
        if dup:
            raise ValueError(f"duplicate k {dup}: each k is one column")
        return v


def probe_key(k: int | str) -> str:
    """Metric key of the probe on the first k tokens (MLflow keys allow no '@')."""
    return f"probe_k{k}"


def bits_key(k: int | str) -> str:
    """Metric key of the prefix capacity sum_{s<k} log2 K_s of the first k tokens (bits)."""
    return f"prefix_bits_k{k}"


def mi_key(k: int | str) -> str:
    """Metric key of the plug-in I(y; z_<k) (bits) on the probe's train tokens."""
    return f"mi_k{k}"


def probe_accuracy(train_x, train_y, test_x, test_y, C: float, max_iter: int, seed: int) -> float:
    """Fit multinomial logistic regression on (train_x, train_y); top-1 accuracy on test, in [0, 1]."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(train_x, train_y)
    return float((clf.predict(test_x) == test_y).mean())


def binomial_stderr(p: float, n: int) -> float:
    """Standard error sqrt(p (1 - p) / n) of an accuracy p in [0, 1] over n independent test items."""
    return float(np.sqrt(p * (1.0 - p) / n))


def _features(adapter, tokens: torch.Tensor, k: int, kind: str, sizes: list[int]):
    if kind == "codes":
        if not callable(getattr(adapter, "code_vectors", None)):
            from bench.errors import MetricError

            raise MetricError(f"probe features 'codes': adapter {adapter.registry_name} has no code_vectors "
                              "(optional member of the Tokenizer contract); use features: onehot")
        return adapter.code_vectors(tokens[:, :k]).reshape(len(tokens), -1).numpy()
    import numpy as np
    from scipy import sparse
    from sklearn.preprocessing import OneHotEncoder

    enc = OneHotEncoder(categories=[np.arange(s) for s in sizes[:k]], handle_unknown="error")
    return sparse.csr_matrix(enc.fit_transform(tokens[:, :k].numpy()))


@register_metric("probe")
class LinearProbe(Metric):
    """Top-1 of a logistic-regression probe on the first k tokens, for each k in ``ks``."""

    requires = ("tokenize",)
    Params = ProbeParams

    @classmethod
    def columns(cls, params):
        # probe@k = the first k tokens of the sequence the AR model sees (Prologue: its prologue tokens first)
        cols = {probe_key(k): Column(f"probe@{k} top-1 (first {k} tokens of the AR sequence)", True,
                                     group="representation", short=f"P@{k}",
                                     uncertainty="binomial stderr over test images")
                for k in params.ks}
        for k in params.ks:  # descriptive: capacity and plug-in information, no better/worse direction
            cols[bits_key(k)] = Column(f"prefix bits, first {k} tokens (sum log2 K_s)", None, "bits",
                                       group="representation", short=f"b@{k}")
            cols[mi_key(k)] = Column(f"I(y; z_<{k}) plug-in (n_train={params.n_train})", None, "bits",
                                     group="representation", short=f"I@{k}")
        return cols

    def compute(self, adapter, ctx, params):
        train = ctx.dataset.train.head(params.n_train)
        test = ctx.dataset.test.head(params.n_test)
        tr_tok, te_tok = adapter.encode(train.images), adapter.encode(test.images)
        sizes, length = adapter.codebook_sizes, tr_tok.shape[1]
        where = f"probe ({adapter.registry_name})"
        z_train = check_token_ids(tr_tok, sizes, where + " train tokens")
        check_token_ids(te_tok, sizes, where + " test tokens")
        kks = {k: length if k == "all" else min(int(k), length) for k in params.ks}
        info = prefix_label_information(z_train, train.labels.numpy(), sorted(set(kks.values())))
        out = {}
        for k in params.ks:
            kk = kks[k]
            out[bits_key(k)] = prefix_bits(sizes, kk)
            out[mi_key(k)] = info[kk]["mi"]
            out[mi_key(k) + "_bias"] = info[kk]["bias"]
            out[mi_key(k) + "_groups"] = info[kk]["groups"]
            acc = out[probe_key(k)] = probe_accuracy(
                _features(adapter, tr_tok, kk, params.features, sizes), train.labels.numpy(),
                _features(adapter, te_tok, kk, params.features, sizes), test.labels.numpy(),
                params.C, params.max_iter, ctx.seed)
            # the probe is fixed once fit; the test images are the sampled items (binomial stderr)
            out[probe_key(k) + "_stderr"] = binomial_stderr(acc, len(test))
        ctx.log_param("probe.features", params.features)
        ctx.log_param("probe.n_train", len(train))
        return check_finite(out, "probe")
