"""One Fréchet-distance (and KID) metric family: an instrument's features of a (real, fake) image pair.

FID: Fréchet distance between Gaussians fitted to features of two image sets (Heusel et al. 2017,
arXiv 1706.08500). KID: unbiased MMD^2 with the cubic polynomial kernel, mean over random subsets
(Bińkowski et al. 2018, arXiv 1801.01401). Both formulas are torch-fidelity's own (``metric_fid`` /
``metric_kid``, defaults: 100 subsets, rng seed 2020), staged as pure functions
(features -> statistics -> metric) fed by the cell's input provider (:mod:`bench.inputs`), which
makes each image set and its features once per cell.

A member of the family (:class:`FrechetMetric`) is data: the image pair (``reconstruction``:
decode(encode(x)) of the first n test images vs those images; ``generation``: n class-balanced
samples vs n class-balanced train images), the instrument (:mod:`bench.instruments.features`),
its output key and column title. ``rfid``/``gfid`` (:mod:`bench.metrics.fid`) and
``rfd_fmnist``/``gfd_fmnist`` (:mod:`bench.metrics.fd_fmnist`) are the registered members.

Floor: every member also outputs ``<key>_floor`` (and ``<prefix>kid_floor``, ``<key>_floor_stderr``): the same
distance between two *independent real* sets at the same n and instrument (the n first test images
vs n class-balanced train images, i.e. what a perfect generator, or a reconstruction as good as a
fresh real sample, scores at this n; FD/FID are biased upwards at finite n). Computed once per
(instrument, image sets, n) and cached (``results/cache/frechet_floor/``); the leaderboard shows
it as the "real vs real" row and each method's distance to it. No floor against the ADM batch.

NFE sweep: a generation member's params may carry ``steps: [1, 2, 4, 8]`` (:class:`SweepParams`);
it then outputs ``<key>_nfe<s>`` per asked steps s (``<key>@<s>``; MLflow keys allow no '@') and the measured
NFE ``nfe_steps<s>``, and logs ``<key>`` as an MLflow metric history with step = measured NFE.
Without ``steps`` the outputs, and the config hash, are those of the adapter's default steps.

Temperature sweep: a generation member's params may also carry ``temperatures: [0.85, 1.0]``
(:class:`TemperatureParams`): samples are drawn at each sampling temperature T (the adapter's
``temperature`` param, :mod:`bench.sampling`) and the outputs are ``<key>_temp<T>`` (``0.85`` ->
``temp0p85``; with ``steps`` too: ``<key>_temp<T>_nfe<s>``, one quality-vs-NFE curve per T).
Without ``temperatures`` the adapter's own temperature is used and nothing changes.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator, model_serializer

from bench import inputs as inp
from bench.data.base import ImageSplit
from bench.metrics.base import MAX_NFE, Column, Metric, MetricParams, check_finite, stderr_key

KID_SUBSETS = 100  # torch-fidelity's default
KID_RNG_SEED = 2020  # torch-fidelity's default: fixed subsets, so KID is reproducible
RECONSTRUCTION, GENERATION = "reconstruction", "generation"


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (float [N, D] each, N >= 2).

    torch-fidelity's ``fid_features_to_statistics`` (mean, ``np.cov``) and
    ``fid_statistics_to_metric`` (trace of sqrt via eigenvalues of sigma_a @ sigma_b).
    Units: squared feature units. Never NaN for finite inputs; can be ~-1e-6 for equal sets.
    """
    import torch
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
    import torch
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    a, b = (torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)) for f in (feats_a, feats_b))
    out = kid_features_to_metric(a, b, kid_subsets=subsets, kid_subset_size=subset_size, rng_seed=rng_seed,
                                 verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def frechet_bootstrap_stderr(feats_a: np.ndarray, feats_b: np.ndarray, resamples: int, seed: int) -> float | None:
    """Seeded bootstrap standard error of :func:`frechet_distance` over the images of both sets.

    Each resample draws N_a and N_b images with replacement from each set (independently) and
    recomputes the distance; returns the sample std (ddof=1) of the ``resamples`` values, or None
    when ``resamples`` < 2. Cost: ``resamples`` extra distances (64-d features: ~1 ms each; 2048-d
    Inception features with N < D: ~0.15 s each through :mod:`bench.metrics.frechet_lowrank`).
    """
    if resamples < 2:
        return None
    from bench.metrics.frechet_lowrank import frechet_distance_qr  # same value; far cheaper when N < D

    fd = frechet_distance_qr if feats_a.shape[1] > max(len(feats_a), len(feats_b)) else frechet_distance
    rng = np.random.default_rng(seed)
    vals = [fd(feats_a[rng.integers(0, len(feats_a), len(feats_a))],
                             feats_b[rng.integers(0, len(feats_b), len(feats_b))]) for _ in range(resamples)]
    return float(np.std(vals, ddof=1))


BOOTSTRAP_SEED = 20250  # fixed: the FD stderr of a feature pair is reproducible


class _OmitUnsetSweeps(MetricParams):
    """Drops ``steps`` / ``temperatures`` from the dumped params when absent (one serializer for both
    mixins, so a suite without a sweep keeps its config hash)."""

    @model_serializer(mode="wrap")
    def _omit_unset_sweeps(self, handler):
        d = handler(self)
        if isinstance(d, dict):
            for k in ("steps", "temperatures"):
                if k in d and d[k] is None:
                    d.pop(k)
        return d


class SweepParams(_OmitUnsetSweeps):
    """Mixin for sample-based metrics: ``steps``, the NFE sweep (absent = the adapter's default).

    Left out of the dumped params when absent, so a suite without a sweep keeps its config hash.
    """

    steps: list[int] | None = Field(default=None, min_length=1,
                                    description="sampler steps (NFE) to evaluate at; default: the adapter's own")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (any(s < 1 for s in v) or len(set(v)) != len(v)):
            raise ValueError(f"steps must be distinct integers >= 1, got {v}")
        if v is not None and any(s > MAX_NFE for s in v):
            raise ValueError(f"steps {[s for s in v if s > MAX_NFE]} above {MAX_NFE} (the most NFE a metric samples at)")
        return v


class TemperatureParams(_OmitUnsetSweeps):
    """Mixin for sample-based metrics: ``temperatures``, the sampling-temperature sweep (absent = the
    adapter's own ``temperature``). Left out of the dumped params when absent (config hash unchanged)."""

    temperatures: list[float] | None = Field(default=None, min_length=1,
                                             description="sampling temperatures T > 0 to evaluate at (each "
                                                         "overrides the method's `temperature` param); default: "
                                                         "the method's own")

    @field_validator("temperatures")
    @classmethod
    def _temps(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (any(not 0 < t <= MAX_TEMPERATURE for t in v) or len(set(v)) != len(v)):
            raise ValueError(f"temperatures must be distinct numbers in (0, {MAX_TEMPERATURE:g}], got {v}")
        return v


MAX_TEMPERATURE = 100.0
"""Highest sampling temperature a sweep may ask for: at T = 100 a softmax over logits of a few units is uniform."""


def temp_key(key: str, temperature: float | None) -> str:
    """Output key of ``key`` at sampling temperature T (``0.85`` -> ``<key>_temp0p85``; None: ``key``)."""
    return key if temperature is None else f"{key}_temp{float(temperature):g}".replace(".", "p")


def point_key(key: str, steps: int | None, temperature: float | None) -> str:
    """Output key of ``key`` at one sweep point (steps and/or temperature; both None: ``key``)."""
    k = temp_key(key, temperature)
    return k if steps is None else sweep_key(k, steps)


def sweep_key(key: str, steps: int) -> str:
    """Output key of ``key`` at ``steps`` sampler steps (MLflow keys allow no '@')."""
    return f"{key}_nfe{steps}"


def nfe_key(steps: int) -> str:
    """Output key of the measured NFE of the samples asked at ``steps``."""
    return f"nfe_steps{steps}"


class FrechetMetric(Metric):
    """A Fréchet (and, with ``kid``, KID) distance in an instrument's features; subclasses are data."""

    pair: ClassVar[str] = "?"  # RECONSTRUCTION or GENERATION
    prefix: ClassVar[str] = "?"  # "r" or "g": key = prefix + base, title = prefix + title
    base: ClassVar[str] = "?"  # "fid" -> rfid / gfid; "fd_fmnist" -> rfd_fmnist / gfd_fmnist
    title: ClassVar[str] = "?"  # "FID" / "FD"
    kid: ClassVar[bool] = False  # also KID (keys prefix + "kid")
    bootstrap_resamples: ClassVar[int] = 0  # >= 2: also ``<key>_stderr`` (seeded bootstrap over images)

    # -- declaration ---------------------------------------------------------------------------
    @classmethod
    def instrument(cls, params: MetricParams) -> str:
        """The registered instrument id whose features this metric compares."""
        raise NotImplementedError

    @classmethod
    def resamples(cls, params: MetricParams) -> int:
        """Bootstrap resamples of ``<key>_stderr`` at these params (< 2: no stderr logged)."""
        return cls.bootstrap_resamples

    @classmethod
    def tag(cls, params: MetricParams) -> str:
        return f"{cls.instrument(params)}, n={params.n}"

    @classmethod
    def sweep(cls, params: MetricParams) -> list[int | None]:
        return list(getattr(params, "steps", None) or [None])

    @classmethod
    def points(cls, params: MetricParams) -> list[tuple[int | None, float | None]]:
        """Sweep points (steps, temperature): every asked steps at every asked temperature."""
        return [(s, t) for t in (getattr(params, "temperatures", None) or [None]) for s in cls.sweep(params)]

    @classmethod
    def real_input(cls, params: MetricParams) -> inp.InputSpec:
        return inp.real_test(params.n) if cls.pair == RECONSTRUCTION else inp.real_train_balanced(params.n)

    @classmethod
    def floor_input(cls, params: MetricParams) -> inp.InputSpec | None:
        """The independent real set whose distance to :meth:`real_input` is the floor (None: no floor):
        the test images where the metric's real set is train, else the class-balanced train images (a
        subclass that compares with test, e.g. ``gfd_judge``, must not get FD(test, test) = 0)."""
        if cls.pair == GENERATION and getattr(params, "reference", "train") != "train":
            return None
        other = inp.real_test(params.n)
        return inp.real_train_balanced(params.n) if cls.real_input(params) == other else other

    @classmethod
    def fake_input(cls, params: MetricParams, steps: int | None,
                   temperature: float | None = None) -> inp.InputSpec:
        if cls.pair == RECONSTRUCTION:
            return inp.reconstructions(params.n)
        return inp.samples(params.n, steps, temperature)

    @classmethod
    def inputs(cls, params: MetricParams) -> list[inp.InputSpec]:
        inst, bs = cls.instrument(params), params.batch_size
        return [inp.features(inst, cls.real_input(params), bs)] + [
            inp.features(inst, cls.fake_input(params, s, t), bs) for s, t in cls.points(params)]
        # the floor's second real set is not declared: it is optional (skipped when the split is too small)

    @classmethod
    def columns(cls, params: MetricParams) -> dict[str, Column]:
        names = [(cls.prefix + cls.base, cls.prefix + cls.title)]
        if cls.kid:
            names.append((f"{cls.prefix}kid", f"{cls.prefix}KID"))
        cols: dict[str, Column] = {}
        unc = (f"bootstrap over images, {cls.resamples(params)} resamples" if cls.resamples(params) >= 2 else "")
        for key, title in names:  # one column per output and NFE, then the measured NFEs
            u = unc if "fd" in key or "fid" in key else ""
            for s, t in cls.points(params):
                where = "".join(f", {k}={v:g}" for k, v in (("NFE", s), ("T", t)) if v is not None)
                short = key + ("" if t is None else f"@T{t:g}") + ("" if s is None else f"@{s}")
                cols[point_key(key, s, t)] = Column(f"{title} ({cls.tag(params)}{where})", higher_is_better=False,
                                                    short=short, uncertainty=u)
        for s in cls.sweep(params):
            if s is not None:
                cols[nfe_key(s)] = Column(f"measured NFE (steps={s})", higher_is_better=False, unit="NFE",
                                          kind="cost", short=f"NFE{s}")
        return cols

    # -- computation ---------------------------------------------------------------------------
    def image_sets(self, adapter: Any, ctx: Any, params: MetricParams,
                   steps: int | None = None) -> tuple[ImageSplit, ImageSplit]:
        """(real reference set, generated or reconstructed set), ``params.n`` images each."""
        p = inp.provider(ctx)
        return p.get(self.real_input(params), adapter), p.get(self.fake_input(params, steps), adapter)

    def compute(self, adapter: Any, ctx: Any, params: MetricParams) -> dict[str, float]:
        name, p = self.registry_name, inp.provider(ctx)
        inst, bs = self.instrument(params), params.batch_size
        real = self.real_input(params)
        f_real = p.get(inp.features(inst, real, bs), adapter)
        out: dict[str, float] = {}
        for s, t in self.points(params):
            f_fake = p.get(inp.features(inst, self.fake_input(params, s, t), bs), adapter)
            fd_key = self.prefix + self.base
            vals = {fd_key: self.distance(f_fake, f_real, ctx, params)}
            se = frechet_bootstrap_stderr(f_fake, f_real, self.resamples(params), BOOTSTRAP_SEED)
            kid_std = None
            if self.kid:
                vals[f"{self.prefix}kid"], kid_std = kernel_distance(f_fake, f_real, params.kid_subset_size)
                if params.kid_subset_size >= min(len(f_fake), len(f_real)):
                    kid_std = None  # every subset is the whole set: the "spread" measures nothing
            if s is None:
                if kid_std is not None:
                    ctx.log_metric(temp_key(f"{self.prefix}kid_std", t), kid_std, None)
                out.update({temp_key(k, t): v for k, v in vals.items()})
                if se is not None:
                    out[stderr_key(temp_key(fd_key, t))] = se
                continue
            nfe = p.nfe(s)
            step = int(round(nfe))
            for k, v in vals.items():  # the quality-vs-NFE history, one MLflow metric per output (and T)
                ctx.log_metric(temp_key(k, t), v, step)
                out[point_key(k, s, t)] = v
            if kid_std is not None:
                ctx.log_metric(temp_key(f"{self.prefix}kid_std", t), kid_std, step)
            out[nfe_key(s)] = nfe
            if se is not None:
                out[stderr_key(point_key(fd_key, s, t))] = se
        out.update(self.floor(adapter, ctx, params))
        from bench.instruments.features import extractor

        for k, v in {**extractor(inst).provenance(), **self.logged_params(params),
                     "reference_fingerprint": p.get(real, adapter).fingerprint()}.items():
            ctx.log_param(f"{name}.{k}", v)
        return check_finite(out, name)

    def floor(self, adapter: Any, ctx: Any, params: MetricParams) -> dict[str, float]:
        """``<key>_floor`` (+ ``_stderr``, ``<prefix>kid_floor``): the distance between two independent real
        sets at this n and instrument (:meth:`floor_input` vs :meth:`real_input`), cached by what defines it."""
        import json

        from bench.context import stable_hash
        from bench.instruments.features import extractor

        floor = self.floor_input(params)
        ds = ctx.dataset
        if floor is None or min(len(ds.test), len(ds.train)) < params.n:
            ctx.log_param(f"{self.registry_name}.floor", "none (ADM reference, or a split has fewer than n images)")
            return {}
        p, inst, bs = inp.provider(ctx), self.instrument(params), params.batch_size
        fd_key = self.prefix + self.base
        # the pair in a fixed order (by fingerprint): rFD's (test, train) and gFD's (train, test) floors are
        # one computation and one cache entry
        a, b = sorted((self.real_input(params), floor), key=lambda spec: p.get(spec, adapter).fingerprint())
        key = stable_hash({"inst": extractor(inst).provenance(), "a": p.get(a, adapter).fingerprint(),
                           "b": p.get(b, adapter).fingerprint(), "kid": self.kid,
                           "kid_subset": getattr(params, "kid_subset_size", None), "boot": self.resamples(params)})
        cached = ctx.cache.load_json("frechet_floor", key)
        if cached is None:
            f_a, f_b = p.get(inp.features(inst, a, bs), adapter), p.get(inp.features(inst, b, bs), adapter)
            cached = {"fd": frechet_distance(f_a, f_b),
                      "fd_stderr": frechet_bootstrap_stderr(f_a, f_b, self.resamples(params), BOOTSTRAP_SEED)}
            if self.kid:
                cached["kid"] = kernel_distance(f_a, f_b, params.kid_subset_size)[0]
            ctx.cache.save_json("frechet_floor", key, json.dumps(cached))
        out = {f"{fd_key}_floor": cached["fd"]}
        if cached.get("fd_stderr") is not None:
            out[f"{fd_key}_floor_stderr"] = cached["fd_stderr"]
        if "kid" in cached:
            out[f"{self.prefix}kid_floor"] = cached["kid"]
        return out

    def distance(self, f_fake: np.ndarray, f_real: np.ndarray, ctx: Any, params: MetricParams) -> float:
        """The Fréchet distance this member reports (float64 features [n, D] each); a member whose
        reference is a fixed set of statistics overrides it (``gfid`` vs the ADM batch's mu/sigma)."""
        return frechet_distance(f_fake, f_real)

    def logged_params(self, params: MetricParams) -> dict[str, Any]:
        """Parameters logged with the values (besides the instrument's provenance)."""
        extra = {"kid_subset_size": params.kid_subset_size, "kid_subsets": KID_SUBSETS} if self.kid else {}
        steps = getattr(params, "steps", None)
        temps = getattr(params, "temperatures", None)
        return {"n": params.n, **extra, **({"steps": ",".join(map(str, steps))} if steps else {}),
                **({"temperatures": ",".join(f"{t:g}" for t in temps)} if temps else {})}
