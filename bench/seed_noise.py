"""A suite's measured seed-noise model: how much one method's metrics move between training seeds.

A one-seed cell's logged ``<key>_stderr`` holds only the sampling error of the evaluation items (the
test images, the questions); the same method trained with another seed moves by much more (in the
default suite the baseline's rFD moved ~20 between seeds against a sampling se of ~4). A one-seed
interval is therefore ``sqrt(se_sampling^2 + sd_seed^2)``, with ``sd_seed`` read from this model and
its t quantile at the model's degrees of freedom (:func:`bench.stats.satterthwaite`); without a
current model a one-seed claim is *inconclusive: one seed, no seed-noise model* (:mod:`bench.claims`).

``bench seed-noise SUITE --seeds 0,1,2,3,4,5`` runs the baseline (or ``--method`` rows) over the
seeds and writes ``results/baselines/<suite>.seed_noise.json`` (or the suite's ``seed_noise:``
file): per metric the between-seed SD (ddof = 1; pooled over the measured methods), the SD relative
to the mean, the seed count and degrees of freedom, and each measured method's per-seed values
(which :mod:`bench.aa` resamples for the A/A calibration). The file records each measured method's
config hash (which covers the instruments, sample counts and budgets); a model whose method is gone
or whose hash differs from the suite's current one is *stale* and refused, as a stale gate baseline is.

Applied to another method of the suite, a metric's SD is ``max(sd, sd_rel * |value|)``: the larger
of the absolute and the relative reading, so a method with larger values is not given the
baseline's smaller absolute spread.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SCHEMA = "genbench.seed_noise/1"
MIN_SEEDS = 3  # fewer seeds give an SD with 1 degree of freedom: refused when measuring


@dataclass(frozen=True)
class MetricNoise:
    """The between-seed spread of one metric key."""

    sd: float  # metric units (pooled over the measured methods, ddof = 1)
    sd_rel: float | None  # sd / |mean| (None when the mean is 0)
    n: int  # seeds (all measured methods together)
    df: int  # degrees of freedom of sd: sum over methods of (seeds - 1)

    def at(self, value: float) -> float:
        """The SD applied to a one-seed value: ``max(sd, sd_rel * |value|)``."""
        rel = self.sd_rel * abs(value) if self.sd_rel is not None and math.isfinite(value) else 0.0
        return max(self.sd, rel)


@dataclass
class SeedNoiseModel:
    """The measured model (see the module docstring); ``stale`` says why it must not be used."""

    suite: str
    path: str
    methods: dict[str, dict[str, Any]]  # name -> {config_hash, seeds, values: {key: [...]}}
    metrics: dict[str, MetricNoise]
    provenance: dict[str, Any] = field(default_factory=dict)
    stale: str | None = None

    @property
    def n_seeds(self) -> int:
        return max((len(m.get("seeds", [])) for m in self.methods.values()), default=0)

    @property
    def label(self) -> str:
        return f"1 seed + seed-noise model ({self.n_seeds} seeds of {', '.join(self.methods)})"

    def noise(self, key: str) -> MetricNoise | None:
        return self.metrics.get(key)

    def values(self, method: str | None = None) -> dict[str, list[float]]:
        """Per-seed values (with ``<key>_stderr``) of a measured method (default: the first)."""
        m = method or next(iter(self.methods), None)
        return {k: list(v) for k, v in (self.methods.get(m, {}).get("values") or {}).items()}

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "suite": self.suite,
                "methods": self.methods,
                "metrics": {k: {"sd": v.sd, "sd_rel": v.sd_rel, "n": v.n, "df": v.df} for k, v in self.metrics.items()},
                "provenance": self.provenance}


def _metric_keys(values: dict[str, list[float]]) -> list[str]:
    return [k for k in values if not k.endswith("_stderr")]


def build(suite_name: str, rows: list, path: str, provenance: dict | None = None) -> SeedNoiseModel:
    """A model from :class:`bench.leaderboard.Row` s of the measured methods (each >= :data:`MIN_SEEDS` seeds)."""
    methods, pooled = {}, {}
    for r in rows:
        if len(r.seeds) < MIN_SEEDS:
            raise BenchError(f"seed-noise model of {suite_name}: method {r.method!r} has {len(r.seeds)} finished "
                             f"seed(s) {r.seeds}; measure at least {MIN_SEEDS} (e.g. --seeds 0,1,2,3,4,5)")
        methods[r.method] = {"config_hash": r.config_hash, "seeds": list(r.seeds),
                             "values": {k: [float(x) for x in v] for k, v in r.per_seed.items()
                                        if len(v) == len(r.seeds)}}
        for k in _metric_keys(r.per_seed):
            xs = [float(x) for x in r.per_seed[k]]
            if len(xs) != len(r.seeds) or not all(math.isfinite(x) for x in xs):
                continue  # a metric some seed did not log, or an infinite one ("never reached"): no SD
            acc = pooled.setdefault(k, {"ss": 0.0, "ss_rel": 0.0, "df": 0, "n": 0, "rel_ok": True})
            m = statistics.fmean(xs)
            var = statistics.variance(xs)
            acc["ss"] += var * (len(xs) - 1)
            if m != 0:
                acc["ss_rel"] += var / (m * m) * (len(xs) - 1)
            else:
                acc["rel_ok"] = False
            acc["df"] += len(xs) - 1
            acc["n"] += len(xs)
    metrics = {k: MetricNoise(math.sqrt(a["ss"] / a["df"]), math.sqrt(a["ss_rel"] / a["df"]) if a["rel_ok"] else None,
                              a["n"], a["df"]) for k, a in pooled.items() if a["df"] > 0}
    return SeedNoiseModel(suite_name, path, methods, metrics, provenance or {})


def default_path(suite) -> Path:
    from bench.suite import REPO_ROOT

    if getattr(suite, "seed_noise", None):
        return REPO_ROOT / suite.seed_noise
    return REPO_ROOT / "results" / "baselines" / f"{suite.name}.seed_noise.json"


def read(path: Path) -> SeedNoiseModel:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: cannot read the seed-noise model: {e}; write it again with `bench seed-noise`") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise BenchError(f"{path}: not a seed-noise model (schema {SCHEMA!r}); write it with `bench seed-noise`")
    try:
        metrics = {k: MetricNoise(float(v["sd"]), None if v.get("sd_rel") is None else float(v["sd_rel"]),
                                  int(v["n"]), int(v["df"])) for k, v in doc["metrics"].items()}
        return SeedNoiseModel(str(doc["suite"]), str(path), dict(doc["methods"]), metrics, dict(doc.get("provenance") or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"{path}: malformed seed-noise model ({type(e).__name__}: {e}); write it again with "
                         "`bench seed-noise`") from None


def staleness(model: SeedNoiseModel, suite) -> str | None:
    """Why ``model`` does not describe ``suite``'s current configuration (None: it does)."""
    from bench.plan import config_hash

    if model.suite != suite.name:
        return f"it was measured on suite {model.suite!r}, not {suite.name!r}"
    names = [m.name for m in suite.methods]
    for name, info in model.methods.items():
        if name not in names:
            return f"its method {name!r} is no longer in the suite"
        now = config_hash(suite, suite.method(name))
        if info.get("config_hash") != now:
            return (f"{name}'s config hash changed ({info.get('config_hash')} when measured, {now} now): "
                    f"re-measure with `bench seed-noise {suite.name}`")
    return None


def load_for(suite) -> tuple[SeedNoiseModel | None, str]:
    """``(model, why)``: the suite's current model, or None and the reason there is none / it is refused."""
    path = default_path(suite)
    if not path.exists():
        where = suite.seed_noise or f"results/baselines/{suite.name}.seed_noise.json"
        if getattr(suite, "seed_noise", None):
            return None, f"the suite's seed_noise file {where} does not exist"
        return None, (f"no seed-noise model ({where}; measure it with `bench seed-noise {suite.name} "
                      "--seeds 0,1,2,3,4,5`)")
    model = read(path)
    why = staleness(model, suite)
    if why:
        model.stale = why
        return None, f"stale seed-noise model {path.name}: {why}"
    return model, model.label


def write(model: SeedNoiseModel, path: Path) -> Path:
    from bench.provenance import git_sha

    model.provenance = {"git_sha": git_sha(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **_machine(), **model.provenance}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model.to_dict(), indent=1, sort_keys=False) + "\n")
    return path


def _machine() -> dict:
    import os
    import platform

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": f"{platform.machine()} {cpu}".strip(), "cores": os.cpu_count()}
