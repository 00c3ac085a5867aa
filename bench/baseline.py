"""Committed baselines for the regression gate: what a suite's numbers were, and with what.

A baseline file (JSON, ``results/baselines/<suite>.json``) holds, per method and gated metric,
the mean over seeds (``value``), the sample std over seeds (``std``, ddof=1; null with one seed),
the seed count ``n``, the direction (``higher``/``lower`` is better, with its arrow) and a
``tolerance`` (any of ``abs``, ``rel``, ``k_std``; the allowed worsening is the largest of
``abs``, ``rel * |value|`` and ``k_std * std``). Provenance: the git SHA the file was written
at and the runs' own SHAs, each method's config hash, the package versions the runs logged,
torch's thread count, and the metrics' instrument provenance (extractor ids, weights sha256,
reference-set fingerprints) that ``bench compare`` requires to be identical.

Tolerances come from the suite's optional ``gate:`` section (per-metric overrides, a default,
exclusions), else :data:`DEFAULT_TOLERANCE`; they are written into the file, which is the
contract ``bench compare`` applies (hand edits are fine). The runs a baseline (or a comparison)
is built from are selected by :func:`select_runs`.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.suite import Suite, ToleranceSpec
from bench.tracking import TAG, Tracker

SCHEMA = "bench.baseline/1"
NOISE_SCHEMA = "bench.gate-noise/1"

DEFAULT_TOLERANCE = ToleranceSpec(abs=None, rel=0.05, k_std=2.5)
"""Used for metrics the suite's ``gate:`` section does not set (see docs/ci-gate.md for why)."""

FLOAT_EPS = 1e-9
"""Relative slack always allowed, so float round-off in a recomputation never fails the gate."""

_INSTRUMENT = re.compile(r"(sha256|extractor|fingerprint)", re.IGNORECASE)


class GateError(BenchError):
    """The comparison cannot be made (missing runs or metrics, config or extractor mismatch,
    unreadable baseline): exit code 2, never a verdict."""


# --------------------------------------------------------------------------------------------
# run selection
# --------------------------------------------------------------------------------------------
@dataclass
class MethodRuns:
    """The finished cell runs of one method chosen for a baseline or a comparison (one per seed)."""

    method: str
    config_hash: str
    runs: dict[int, Any] = field(default_factory=dict)  # seed -> mlflow Run

    def values(self, key: str, seeds: list[int]) -> list[float] | None:
        out = []
        for s in seeds:
            v = self.runs[s].data.metrics.get(key)
            if v is None:
                return None
            out.append(float(v))
        return out


def latest_suite_run(tracker: Tracker, suite: Suite) -> str | None:
    """The newest suite parent run (tag ``bench.kind=suite``) of the suite's experiment."""
    exp = tracker.experiment_id(suite.name, create=False)
    if exp is None:
        return None
    runs = tracker.client.search_runs([exp], f"tags.`{TAG}kind` = 'suite'", order_by=["attributes.start_time DESC"],
                                      max_results=1)
    return runs[0].info.run_id if runs else None


def select_runs(suite: Suite, tracker: Tracker, methods: list[str], seeds: list[int],
                current: str = "latest") -> tuple[dict[str, MethodRuns], list[str]]:
    """Pick one FINISHED cell run per (method, seed), for each method's *current* config hash.

    ``current="latest"``: the newest finished run of each (config hash, seed), whichever
    ``bench run`` produced it (a cached cell keeps its older run). Otherwise ``current`` is the
    id of a suite parent run, and only its child cells count. Returns the selection and the
    problems found (missing runs), which the caller turns into a :class:`GateError`.
    """
    from bench import registry
    from bench.plan import config_hash

    registry.load_all()
    exp = tracker.experiment_id(suite.name, create=False)
    problems: list[str] = []
    out: dict[str, MethodRuns] = {}
    where = f"in the MLflow store {tracker.uri}"
    if exp is None:
        raise GateError(f"no experiment {suite.name!r} {where}: run `bench run {suite.source}` first "
                        "(with the same --tracking-uri)")
    if current != "latest":
        try:
            parent = tracker.client.get_run(current)
        except Exception:  # noqa: BLE001 - mlflow raises its own exception types
            raise GateError(f"--current {current!r}: no such run {where}") from None
        if parent.data.tags.get(f"{TAG}kind") != "suite" or parent.info.experiment_id != exp:
            raise GateError(f"--current {current!r} is not a suite run (tag {TAG}kind=suite) of suite {suite.name!r}")
    for name in methods:
        m = suite.method(name)
        h = config_hash(suite, m)
        mr = MethodRuns(name, h)
        for run in tracker.cell_runs(exp, h):  # newest first
            if current != "latest" and run.data.tags.get("mlflow.parentRunId") != current:
                continue
            seed = int(run.data.tags[f"{TAG}seed"])
            if seed in seeds and seed not in mr.runs:
                mr.runs[seed] = run
        missing = [s for s in seeds if s not in mr.runs]
        if missing:
            how = (f"in suite run {current} (a cell it skipped as already finished is not its child: use "
                   "--current latest, or rerun with --force)" if current != "latest"
                   else f"{where}: run `bench run {suite.source}` (same --tracking-uri)")
            problems.append(f"{name}: no finished run for seed(s) {missing} with config hash {h} {how}")
        out[name] = mr
    return out, problems


def instrument_provenance(suite: Suite, run) -> dict[str, str]:
    """Params that identify a metric's measuring instrument: ``<metric>.<key>`` where key names a
    sha256, an extractor or a reference-set fingerprint (e.g. ``rfd_fmnist.classifier_weights_sha256``)."""
    metric_names = {spec.name for spec in suite.metrics}
    out = {}
    for k, v in run.data.params.items():
        head, _, rest = k.partition(".")
        if head in metric_names and rest and _INSTRUMENT.search(rest):
            out[k] = v
    return dict(sorted(out.items()))


def versions_of(run) -> dict[str, str]:
    pre = f"{TAG}version."
    return {k.removeprefix(pre): v for k, v in sorted(run.data.tags.items()) if k.startswith(pre)}


def consistent(per_seed: dict[int, dict[str, str]], what: str, method: str, problems: list[str]) -> dict[str, str]:
    """Merge per-seed dicts; a key whose value differs between seeds is a problem."""
    merged: dict[str, str] = {}
    for seed, d in sorted(per_seed.items()):
        for k, v in d.items():
            if k in merged and merged[k] != v:
                problems.append(f"{method}: {what} {k} differs between seeds ({merged[k]!r} vs {v!r} at seed {seed})")
            merged.setdefault(k, v)
    return merged


# --------------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------------
def gated_columns(suite: Suite) -> dict:
    """Metric key -> :class:`Column` of every gated metric (the suite's columns minus ``gate.exclude``)."""
    from bench import registry
    from bench.metrics.base import all_columns

    registry.load_all()
    cols = all_columns(suite)
    gate = suite.gate
    if gate is not None:
        unknown = sorted((set(gate.metrics) | set(gate.exclude)) - set(cols))
        if unknown:
            raise GateError(f"{suite.source}: gate: unknown metric key(s) {unknown}; the suite's metrics are {list(cols)}")
        cols = {k: c for k, c in cols.items() if k not in gate.exclude}
    return cols


def load_noise(suite: Suite) -> dict | None:
    """The suite's measured paired-noise document (``gate.noise_file``), or None."""
    from bench.suite import REPO_ROOT

    gate = suite.gate
    if gate is None or not gate.noise_file:
        return None
    p = Path(gate.noise_file)
    p = p if p.is_absolute() else REPO_ROOT / p
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise GateError(f"{suite.source}: gate.noise_file: cannot read {p} ({e}); measure it with "
                        "`bench gate-noise` (docs/ci-gate.md)") from None
    if doc.get("schema") != NOISE_SCHEMA:
        raise GateError(f"{p}: not a noise file (expected \"schema\": {NOISE_SCHEMA!r})")
    return doc


def tolerance_for(suite: Suite, key: str, noise: dict | None = None) -> dict[str, float]:
    """The tolerance written into the baseline for metric ``key``: the suite's ``gate:`` spec, with
    the paired noise of ``noise`` (a :func:`load_noise` document) filled in where the spec sets none."""
    gate = suite.gate
    tol = None
    if gate is not None:
        tol = gate.metrics.get(key) or gate.tolerance
    tol = tol or DEFAULT_TOLERANCE
    out = {k: v for k, v in tol.model_dump().items() if v is not None and v is not False}
    measured = (noise or {}).get("metrics", {}).get(key)
    if measured is not None and tol.noise_rel is None and tol.noise_abs is None:
        out[f"noise_{tol.scale}"] = float(measured[f"rms_{tol.scale}"])
    if "noise_rel" not in out and "noise_abs" not in out:
        out.pop("k", None)
        out.pop("scale", None)
    return out


def is_paired(entry: dict) -> bool:
    tol = entry.get("tolerance") or {}
    return tol.get("noise_rel") is not None or tol.get("noise_abs") is not None


def noise_units(entry: dict) -> float | None:
    """The per-seed paired noise of a baseline entry in metric units (None if unpaired)."""
    tol = entry.get("tolerance") or {}
    if tol.get("noise_abs") is not None:
        return float(tol["noise_abs"])
    if tol.get("noise_rel") is not None:
        per_seed = entry.get("per_seed") or [entry["value"]]
        return float(tol["noise_rel"]) * statistics.fmean(abs(float(v)) for v in per_seed)
    return None


def allowed_worsening(entry: dict) -> float:
    """The largest allowed worsening of a baseline metric entry's mean (>= a float round-off floor).

    Paired entries: ``k * noise / sqrt(n)`` (the mean of n paired differences has noise/sqrt(n));
    unpaired: ``k_std * std``; both with the ``abs`` and ``rel`` floors.
    """
    tol = entry.get("tolerance") or {}
    value, std = float(entry["value"]), entry.get("std")
    cands = [FLOAT_EPS * max(1.0, abs(value))]
    if tol.get("abs") is not None:
        cands.append(float(tol["abs"]))
    if tol.get("rel") is not None:
        cands.append(float(tol["rel"]) * abs(value))
    sigma = noise_units(entry)
    if sigma is not None:
        n = int(entry.get("n") or len(entry.get("per_seed") or [1]))
        cands.append(float(tol.get("k", 3.5)) * sigma / math.sqrt(max(1, n)))
    elif tol.get("k_std") is not None and std is not None and math.isfinite(float(std)):
        cands.append(float(tol["k_std"]) * float(std))
    return max(cands)


def describe_tolerance(entry: dict) -> str:
    tol = entry.get("tolerance") or {}
    parts = []
    if tol.get("noise_rel") is not None:
        parts.append(f"{tol.get('k', 3.5):g}·σ/√n, σ {100 * tol['noise_rel']:.2g}%")
    if tol.get("noise_abs") is not None:
        parts.append(f"{tol.get('k', 3.5):g}·σ/√n, σ {tol['noise_abs']:.3g}")
    if tol.get("abs") is not None:
        parts.append(f"abs {tol['abs']:g}")
    if tol.get("rel") is not None:
        parts.append(f"rel {tol['rel']:g}")
    if tol.get("k_std") is not None and not is_paired(entry):
        parts.append(f"{tol['k_std']:g}σ_seeds")
    return (", ".join(parts) or "exact") + (" (±)" if tol.get("two_sided") else "")


# --------------------------------------------------------------------------------------------
# writing and reading baseline files
# --------------------------------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def build_baseline(suite: Suite, tracker: Tracker, current: str = "latest",
                   methods: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """The baseline document for the suite's current finished runs (raises :class:`GateError`)."""
    import torch

    from bench.provenance import git_sha, numerics

    methods = methods or [m.name for m in suite.methods]
    seeds = sorted(seeds or suite.seeds)
    cols = gated_columns(suite)
    noise = load_noise(suite)
    selected, problems = select_runs(suite, tracker, methods, seeds, current)
    if problems:
        raise GateError("cannot write a baseline:\n  " + "\n  ".join(problems))
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "suite": suite.name,
        "suite_file": suite.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_sha": git_sha(),
        "seeds": seeds,
        "torch_threads": torch.get_num_threads(),
        "package_versions": {},
        "numerics": numerics(),
        "noise_file": suite.gate.noise_file if suite.gate else None,
        "methods": {},
    }
    all_versions: dict[int, dict[str, str]] = {}
    for name in methods:
        mr = selected[name]
        instruments = consistent({s: instrument_provenance(suite, r) for s, r in mr.runs.items()},
                                 "instrument param", name, problems)
        for s, r in mr.runs.items():
            all_versions[len(all_versions)] = versions_of(r)
        metrics = {}
        for key, col in cols.items():
            vals = mr.values(key, seeds)
            if vals is None:
                problems.append(f"{name}: metric {key!r} missing from run(s) "
                                f"{[r.info.run_id[:8] for s, r in sorted(mr.runs.items()) if key not in r.data.metrics]}")
                continue
            mean, std = _stats(vals)
            metrics[key] = {
                "title": col.title, "value": mean, "std": std, "n": len(vals), "per_seed": vals,
                "direction": "none" if col.descriptive else "higher" if col.higher_is_better else "lower",
                "arrow": col.arrow,
                "tolerance": tolerance_for(suite, key, noise),
            }
        doc["methods"][name] = {
            "label": suite.method(name).label or name,
            "baseline_method": suite.method(name).baseline,
            "config_hash": mr.config_hash,
            "seeds": seeds,
            "run_ids": [mr.runs[s].info.run_id for s in seeds],
            "git_shas": sorted({mr.runs[s].data.tags.get(f"{TAG}git_sha", "unknown") for s in seeds}),
            "instruments": instruments,
            "metrics": metrics,
        }
    doc["package_versions"] = consistent(all_versions, "package version", "runs", problems)
    if problems:
        raise GateError("cannot write a baseline:\n  " + "\n  ".join(problems))
    return doc


def write_baseline(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from bench.locks import write_atomic

    write_atomic(path, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode())  # unique temp name
    return path


def load_baseline(path: str | Path) -> dict:
    """Read and sanity-check a baseline file (raises :class:`GateError` naming the problem)."""
    path = Path(path)
    if not path.exists():
        raise GateError(f"{path}: no such baseline file; write one with `bench baseline SUITE --output {path}`")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GateError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise GateError(f"{path}: not a baseline file (expected \"schema\": {SCHEMA!r})")
    problems = []
    for name, m in (doc.get("methods") or {}).items():
        for key in ("config_hash", "metrics"):
            if key not in m:
                problems.append(f"methods.{name}: missing {key!r}")
        for mk, e in (m.get("metrics") or {}).items():
            for key in ("value", "direction"):
                if key not in e:
                    problems.append(f"methods.{name}.metrics.{mk}: missing {key!r}")
            if e.get("direction") not in (None, "higher", "lower", "none"):
                problems.append(f"methods.{name}.metrics.{mk}.direction: must be 'higher', 'lower' or 'none'")
            bad = set(e.get("tolerance") or {}) - {"abs", "rel", "k_std", "two_sided", "noise_rel", "noise_abs",
                                                   "k", "scale"}
            if bad:
                problems.append(f"methods.{name}.metrics.{mk}.tolerance: unknown key(s) {sorted(bad)} "
                                "(use abs, rel, k_std, noise_rel, noise_abs, k, two_sided)")
    if not doc.get("methods"):
        problems.append("methods: empty")
    if problems:
        raise GateError("\n".join(f"{path}: {p}" for p in problems))
    return doc
