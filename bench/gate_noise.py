"""Measure a gate suite's paired cross-machine noise: the allowances of ``bench compare`` come from here.

Machines of one kind differ in their CPU (AVX-512 vs AVX2, Intel vs AMD), so the same code, seed
and data order give slightly different floats, and training amplifies the difference. The gate
compares seed by seed, so what matters is the *paired* noise: for each gated metric, the spread of
``value(variant) - value(reference)`` over (method, seed), where the variants run the same suite
under other floating-point settings (torch's CPU kernel level, MKL's code path, oneDNN's ISA,
thread count; see scripts/gate_noise.sh). The RMS of those differences (relative and absolute)
is written to a noise file (``bench.gate-noise/1``) that the suite's ``gate.noise_file`` names;
``bench baseline`` turns it into each metric's tolerance (``k * noise / sqrt(seeds)``).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from bench.baseline import NOISE_SCHEMA, GateError, gated_columns, select_runs
from bench.suite import Suite
from bench.tracking import TAG, Tracker


@dataclass(frozen=True)
class Variant:
    """One set of finished gate runs: a name and the MLflow store that holds them."""

    name: str
    tracking_uri: str


def _runs(suite: Suite, v: Variant, seeds: list[int]):
    methods = [m.name for m in suite.methods]
    selected, problems = select_runs(suite, Tracker(v.tracking_uri), methods, seeds)
    if problems:
        raise GateError(f"variant {v.name}: " + "; ".join(problems))
    return selected


def _numerics(selected) -> dict[str, str]:
    run = next(iter(next(iter(selected.values())).runs.values()))
    pre = f"{TAG}numerics."
    return {k.removeprefix(pre): val for k, val in sorted(run.data.tags.items()) if k.startswith(pre)}


def measure_noise(suite: Suite, reference: Variant, variants: list[Variant], seeds: list[int] | None = None) -> dict:
    """The noise document: per gated metric, every paired difference and their RMS (``rms_rel``,
    a fraction of |reference|; ``rms_abs``, metric units), ``max_rel``/``max_abs`` and the count.

    Raises :class:`GateError` if a variant lacks a finished run for some (method, seed).
    """
    if not variants:
        raise GateError("gate-noise needs at least one --variant besides the reference")
    cols = gated_columns(suite)
    seeds = sorted(seeds or suite.seeds)
    ref = _runs(suite, reference, seeds)
    others = {v.name: _runs(suite, v, seeds) for v in variants}
    metrics: dict[str, dict] = {}
    for key in cols:
        pairs = []
        for vname, sel in others.items():
            for method, mr in ref.items():
                for seed, run in sorted(mr.runs.items()):
                    a = run.data.metrics.get(key)
                    b = sel[method].runs[seed].data.metrics.get(key)
                    if a is None or b is None:
                        continue
                    pairs.append({"variant": vname, "method": method, "seed": seed, "reference": a, "value": b,
                                  "diff": b - a, "rel": (b - a) / abs(a) if a else None})
        if not pairs:
            continue
        rels = [p["rel"] for p in pairs if p["rel"] is not None]
        diffs = [p["diff"] for p in pairs]
        metrics[key] = {
            "title": cols[key].title, "n_pairs": len(pairs),
            "rms_abs": math.sqrt(statistics.fmean(d * d for d in diffs)),
            "rms_rel": math.sqrt(statistics.fmean(r * r for r in rels)) if rels else 0.0,
            "max_abs": max(abs(d) for d in diffs), "max_rel": max((abs(r) for r in rels), default=0.0),
            "mean_rel": statistics.fmean(rels) if rels else 0.0, "pairs": pairs,
        }
    return {
        "schema": NOISE_SCHEMA, "suite": suite.name, "suite_file": suite.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seeds": seeds,
        "reference": {"name": reference.name, "numerics": _numerics(ref)},
        "variants": [{"name": v.name, "numerics": _numerics(others[v.name])} for v in variants],
        "metrics": metrics,
    }


def to_text(doc: dict) -> str:
    lines = [f"paired noise of suite {doc['suite']}: reference {doc['reference']['name']} vs "
             + ", ".join(v["name"] for v in doc["variants"]),
             f"{'metric':<24} {'pairs':>5} {'rms rel':>9} {'max rel':>9} {'rms abs':>10} {'max abs':>10}"]
    for k, m in doc["metrics"].items():
        lines.append(f"{k:<24} {m['n_pairs']:>5} {100 * m['rms_rel']:>8.2f}% {100 * m['max_rel']:>8.2f}% "
                     f"{m['rms_abs']:>10.4g} {m['max_abs']:>10.4g}")
    return "\n".join(lines) + "\n"
