"""Metrics of the discrete-diffusion suites (``fmnist_diffusion``): judge FD, judge class agreement,
spatial coherence (NFE sweeps) and the test bound in bits/dim with KL per image.

* ``gfd_judge``: Fréchet distance (Heusel et al. 2017, arXiv 1706.08500; torch-fidelity's
  formula, :mod:`bench.metrics.frechet`) between n class-balanced samples and the first n
  *test* images, in the 64-d features of the quantised-image judge
  (:mod:`bench.metrics.fmnist_judge`); ``steps`` sweeps the NFE (``gfd_judge_nfe<s>``).
* ``judge_agreement``: fraction of class-conditional samples the judge assigns to the class
  they were sampled for (``judge_agree_nfe<s>``, binomial stderr ``..._stderr``); the judge's
  own accuracy on the first n test images is the ceiling (``judge_agree_real``).
* ``coherence``: horizontal + vertical neighbour agreement (fraction of adjacent pixel pairs with
  equal value), a spatial-coherence score: an MDM that unmasks many pixels at once samples them
  independently and loses it (docs/methods/vadd.md). Reported as the gap
  ``|rate(samples) - rate(test)|`` (``coherence_gap_nfe<s>``, lower is better); the rates
  themselves are logged as curves (``coherence_rate`` per measured NFE, ``coherence_rate_real``).
* ``diffusion_nll``: the adapter's test bound (``prior``: ``nll``) in bits/dim
  (``bpd_bound``); with ``iw_k`` an importance-weighted estimate from the adapter's optional
  ``nll_iw(images, labels, k)`` (``bpd_iw<K>``, beside the bound from the same draws
  ``bpd_bound_paired_iw<K>``, so the two differ only by the estimator); and the optional ``kl_per_image(images,
  labels)`` (nats, the posterior-collapse watch). Adapters without them leave those cells blank.
* ``train_cost``: the training record of the cell's weights (the adapter's optional ``record``
  dict, :meth:`adapters.diffusion.common.DiffusionAdapter.train`): ``train_s`` (wall seconds of
  the training run that produced the weights, on its machine; a cell that loads cached weights
  reports the run that trained them), ``train_steps``, ``train_flops`` and ``n_params``, so a
  compute-matched control shows how well it is matched.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from bench import inputs as inp
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.frechet import GENERATION, FrechetMetric, SweepParams, nfe_key, sweep_key
from bench.registry import register_metric

if TYPE_CHECKING:
    import torch

KIND = "fmnist-judge"
DEFAULT_JUDGE = "fmnist-bin-judge-v1"
# = fmnist_judge.KIND / DEFAULT_JUDGE, not imported from there (it loads torch, and checking a suite
# must not); tests/test_diffusion.py checks they are equal.


def _registered_judge(v: str) -> str:
    from bench import instruments

    try:
        instruments.card(v, KIND)
    except instruments.InstrumentError as e:
        raise ValueError(str(e)) from None
    return v


def judge_dataset_problems(params, ds_spec: Any) -> list[str]:
    """Validation (no torch): the judge must be trained on the suite's quantised images (its card's
    ``levels`` = ``dataset.params.levels`` of ``fmnist_quantized``); else one line naming the fix."""
    from bench import instruments

    levels = (ds_spec.params or {}).get("levels", 2) if ds_spec.name == "fmnist_quantized" else None
    try:
        have = instruments.card(params.judge, KIND).provenance.get("levels")
    except instruments.InstrumentError:
        return []  # reported by the param validator
    if levels is not None and have == levels:
        return []
    if levels is None:
        return [f"judge: {params.judge} judges {have}-level Fashion-MNIST images (data set fmnist_quantized), "
                f"not data set {ds_spec.name!r}"]
    fits = sorted(i for i, c in instruments.cards().items() if c.kind == KIND and c.provenance.get("levels") == levels)
    return [f"judge: {params.judge} judges {have}-level images but dataset.params.levels is {levels}; "
            + (f"use judge: {fits[0]}" if fits else "no judge of that V is registered")
            + f" (or train one: `bench instrument train fmnist-judge --id fmnist-q{levels}-judge-v1 --levels {levels}`)"]


class JudgeParams(SweepParams):
    n: int = Field(gt=1, description="samples (and test images) per NFE")
    batch_size: int = Field(default=1000, gt=0, description="judge batch size")
    judge: str = Field(default=DEFAULT_JUDGE, description="registered fmnist-judge instrument id (bench/instruments/)")

    @field_validator("judge")
    @classmethod
    def _judge(cls, v: str) -> str:
        return _registered_judge(v)


@register_metric("gfd_judge")
class JudgeFD(FrechetMetric):
    """gFD in the quantised-image judge's features: n class-balanced samples vs the first n test images."""

    requires = ("generate",)
    Params: ClassVar[type[MetricParams]] = JudgeParams
    pair, prefix, base, title = GENERATION, "g", "fd_judge", "FD_judge"
    dataset_problems = staticmethod(judge_dataset_problems)

    @classmethod
    def instrument(cls, params) -> str:
        return params.judge

    @classmethod
    def tag(cls, params) -> str:
        return f"{params.judge}, n={params.n} vs test"

    @classmethod
    def real_input(cls, params):
        return inp.real_test(params.n)

    def compute(self, adapter, ctx, params):
        out = super().compute(adapter, ctx, params)
        plot_run_sweep(ctx, out, "gfd_judge", "FD_judge (vs test) ↓")
        return out


def _sample_sets(ctx: Any, adapter: Any, params) -> list[tuple[int | None, Any]]:
    p = inp.provider(ctx)
    return [(s, p.get(inp.samples(params.n, s), adapter)) for s in (params.steps or [None])]


def _sweep_columns(key: str, title: str, params, higher: bool, stderr: bool) -> dict[str, Column]:
    cols: dict[str, Column] = {}
    for s in params.steps or [None]:
        k = key if s is None else sweep_key(key, s)
        cols[k] = Column(title + ("" if s is None else f" (NFE={s})"), higher)
        if stderr:
            cols[f"{k}_stderr"] = Column(title + " stderr" + ("" if s is None else f" (NFE={s})"), False)
    return cols


@register_metric("judge_agreement")
class JudgeAgreement(Metric):
    """Fraction of class-conditional samples the judge classifies as their conditioning class."""

    requires = ("generate",)
    Params = JudgeParams
    dataset_problems = staticmethod(judge_dataset_problems)

    @classmethod
    def inputs(cls, params):
        return [inp.real_test(params.n)] + [inp.samples(params.n, s) for s in (params.steps or [None])]

    @classmethod
    def columns(cls, params):
        return {**_sweep_columns("judge_agree", f"judge agreement ({params.judge}, n={params.n})", params, True, True),
                "judge_agree_real": Column(f"judge accuracy on test ({params.judge}, n={params.n})", True)}

    def compute(self, adapter, ctx, params):
        from bench.metrics.fmnist_judge import judge

        j = judge(params.judge)
        j.check(ctx)
        p = inp.provider(ctx)
        agree = lambda split: float((j.predict(split.images, params.batch_size) == split.labels).double().mean())  # noqa: E731
        out: dict[str, float] = {"judge_agree_real": agree(p.get(inp.real_test(params.n)))}
        for s, split in _sample_sets(ctx, adapter, params):
            acc = agree(split)
            key = "judge_agree" if s is None else sweep_key("judge_agree", s)
            out[key], out[f"{key}_stderr"] = acc, math.sqrt(max(acc * (1 - acc), 0.0) / len(split))
            if s is not None:
                ctx.log_metric("judge_agree", acc, int(round(p.nfe(s))))
        for k, v in {**j.provenance(), "n": params.n}.items():
            ctx.log_param(f"judge_agreement.{k}", v)
        plot_run_sweep(ctx, out, "judge_agree", "judge class agreement ↑")
        return check_finite(out, "judge_agreement")


def neighbour_agreement(images: torch.Tensor) -> torch.Tensor:
    """Per image, the fraction of horizontally and vertically adjacent pixel pairs with equal value:
    uint8 [N, C, H, W] -> float64 [N] in [0, 1]."""
    import torch

    x = images.long()
    h = (x[..., :, 1:] == x[..., :, :-1]).flatten(1)
    v = (x[..., 1:, :] == x[..., :-1, :]).flatten(1)
    return torch.cat([h, v], 1).double().mean(1)


class CoherenceParams(SweepParams):
    n: int = Field(gt=1, description="samples (and test images) per NFE")


@register_metric("coherence")
class Coherence(Metric):
    """|neighbour agreement of samples - that of the test images| per NFE (spatial coherence gap)."""

    requires = ("generate",)
    Params = CoherenceParams

    @classmethod
    def inputs(cls, params):
        return [inp.real_test(params.n)] + [inp.samples(params.n, s) for s in (params.steps or [None])]

    @classmethod
    def columns(cls, params):
        return _sweep_columns("coherence_gap", f"coherence gap |agree - agree_test| (n={params.n})", params, False, True)

    def compute(self, adapter, ctx, params):
        p = inp.provider(ctx)
        real = float(neighbour_agreement(p.get(inp.real_test(params.n)).images).mean())
        ctx.log_metric("coherence_rate_real", real, None)
        out: dict[str, float] = {}
        for s, split in _sample_sets(ctx, adapter, params):
            rates = neighbour_agreement(split.images)
            key = "coherence_gap" if s is None else sweep_key("coherence_gap", s)
            out[key] = abs(float(rates.mean()) - real)
            out[f"{key}_stderr"] = float(rates.std() / math.sqrt(len(rates)))
            if s is not None:
                ctx.log_metric("coherence_rate", float(rates.mean()), int(round(p.nfe(s))))
        ctx.log_param("coherence.n", params.n)
        plot_run_sweep(ctx, out, "coherence_gap", "coherence gap ↓")
        return check_finite(out, "coherence")


class NLLParams(MetricParams):
    n: int | None = Field(None, gt=0, description="first n test images (None = all)")
    iw_k: int | None = Field(None, gt=1, description="K of the importance-weighted estimate (None = none)")
    iw_n: int | None = Field(None, gt=0, description="first n test images for the IW estimate (default: n)")


@register_metric("diffusion_nll")
class DiffusionNLL(Metric):
    """Test bound in bits/dim (+ IW estimate and KL per image where the adapter has them)."""

    requires = ("prior",)
    Params = NLLParams

    @classmethod
    def columns(cls, params):
        cols = {"bpd_bound": Column("test bound (negative ELBO/DELBO)", False, "bits/dim")}
        if params.iw_k:
            cols[f"bpd_iw{params.iw_k}"] = Column(f"test IW estimate (K={params.iw_k}, IW-(D)ELBO, first "
                                                  f"{params.iw_n or params.n} images)", False, "bits/dim")
            cols[f"bpd_bound_paired_iw{params.iw_k}"] = Column(f"test bound, same draws as the IW estimate (K={params.iw_k})",
                                                               False, "bits/dim")
        cols["kl_per_image"] = Column("KL(r(z|x0,M_t) || p(z)) per test image (collapse watch)", True, "nats")
        return cols

    def compute(self, adapter, ctx, params):
        test = ctx.dataset.test.head(params.n)
        dims = test.images[0].numel()
        to_bpd = lambda nats: float(nats.mean()) / (dims * math.log(2))  # noqa: E731
        res = adapter.nll(test.images, test.labels)
        out = {"bpd_bound": to_bpd(res.per_sequence),
               "bpd_bound_stderr": float(res.per_sequence.std()) / math.sqrt(len(test)) / (dims * math.log(2))}
        if params.iw_k and hasattr(adapter, "nll_iw"):
            sub = test.head(params.iw_n or params.n)
            out[f"bpd_iw{params.iw_k}"] = to_bpd(adapter.nll_iw(sub.images, sub.labels, params.iw_k).per_sequence)
            paired = getattr(adapter, "last_paired_bound", None)
            if paired is not None:  # the bound from the IW estimate's own t, masks and z (common random numbers)
                out[f"bpd_bound_paired_iw{params.iw_k}"] = to_bpd(paired)
        if hasattr(adapter, "kl_per_image"):
            out["kl_per_image"] = float(adapter.kl_per_image(test.images, test.labels).mean())
        ctx.log_param("diffusion_nll.n", len(test))
        return check_finite(out, "diffusion_nll")


TRAIN_COLUMNS = {
    "train_s": Column("train s (wall clock of the run that trained the weights)", False, "s", kind="cost",
                      short="train s"),
    "train_steps": Column("train steps", False, "steps", kind="cost", short="steps"),
    "train_flops": Column("train FLOPs (FlopCounterMode)", False, "FLOP", kind="cost", short="FLOPs"),
    "n_params": Column("parameters (all networks)", False, "params", kind="cost", short="params"),
}
_RECORD_KEYS = {"train_s": "train_seconds", "train_steps": "train_steps", "train_flops": "train_flops",
                "n_params": "n_params"}


@register_metric("train_cost")
class TrainCost(Metric):
    """The cost of the cell's weights from the adapter's training record (``adapter.record``)."""

    requires = ()
    Params = MetricParams

    @classmethod
    def columns(cls, params):
        return dict(TRAIN_COLUMNS)

    def compute(self, adapter, ctx, params):
        from bench.errors import MetricError

        rec = getattr(adapter, "record", None)
        missing = [v for v in _RECORD_KEYS.values() if not isinstance(rec, dict) or v not in rec]
        if missing:
            raise MetricError(f"train_cost: adapter {getattr(adapter, 'registry_name', '?')!r} has no training "
                              f"record with {missing} (diffusion adapters keep it in `record` after prepare)")
        return check_finite({k: float(rec[v]) for k, v in _RECORD_KEYS.items()}, "train_cost")


def plot_run_sweep(ctx: Any, values: dict[str, float], base: str, ylabel: str) -> Path | None:
    """This run's ``<base>_nfe<s>`` values vs the measured NFE as ``plots/<base>_vs_nfe.png`` (the
    suite-level figure over methods and seeds is :mod:`bench.nfe_plot`)."""
    from bench.nfe_plot import SWEEP_KEY

    pts = sorted((int(m["steps"]), v) for k, v in values.items() if (m := SWEEP_KEY.match(k)) and m["base"] == base)
    art = getattr(ctx, "artifact_dir", None)
    if not pts or art is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = inp.provider(ctx)
    xs = [p.nfe(s) if s in p._nfe else s for s, _ in pts]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.plot(xs, [v for _, v in pts], marker="o")
    ax.set_xscale("log", base=2), ax.set_xlabel("NFE (measured)"), ax.set_ylabel(ylabel)
    ax.set_title(f"{getattr(ctx.method, 'name', '?')} seed {ctx.seed}", fontsize=9)
    fig.tight_layout()
    out = Path(art) / "plots" / f"{base}_vs_nfe.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
