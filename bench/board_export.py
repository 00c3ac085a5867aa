"""``bench export``: the leaderboard as a results file for other tools (JSON; CSV as before).

The JSON is modelled on lm-evaluation-harness's ``results_*.json`` (``results`` keyed by a
task, here a method, holding ``"<metric>,none"`` and ``"<metric>_stderr,none"``; ``configs``;
``versions``; ``n-samples``; ``higher_is_better``; ``git_hash``; ``date``), plus what a
multi-seed benchmark needs: per metric its title, unit, kind, group, instrument, seeds and per-seed
values, and the claims with their verdicts. Schema id ``genbench.results/1``. A missing stderr
is ``null`` (never 0). ``stderr`` is the standard error of the seed mean (:mod:`bench.stats`;
``uncertainty`` says whether from the seed spread, the sampling error or both).
"""
from __future__ import annotations

import json
import math
import time

SCHEMA = "genbench.results/1"
FILTER = "none"  # lm-eval's filter suffix: "acc,none"


def metric_sources(suite) -> dict[str, dict]:
    """Metric key -> {"metric": registered metric name, "instrument": instrument id or None}."""
    from bench import registry

    registry.load_light()
    out = {}
    for spec in suite.metrics:
        cls = registry.get(registry.METRICS, "metric", spec.name)
        params = cls.Params.model_validate(spec.params)
        inst = None
        if hasattr(cls, "instrument"):
            try:
                inst = cls.instrument(params)
            except NotImplementedError:
                inst = None
        for key in cls.columns(params):
            out[key] = {"metric": spec.name, "instrument": inst}
    return out


def _clean(x):
    import math

    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def to_dict(board) -> dict:
    """The export document (JSON-serialisable)."""
    from bench.plan import cell_config
    from bench.provenance import git_sha, package_versions

    suite = board.suite
    src = metric_sources(suite) if hasattr(suite, "metrics") else {}
    results, metrics_doc, configs, n_seeds, hib = {}, {}, {}, {}, {}
    runs_tags = []
    if board.tracker is not None:
        for r in board.rows:
            for rid in r.run_ids:
                runs_tags.append(board.tracker.client.get_run(rid).data.tags)
    for r in board.rows:
        res: dict = {"alias": r.label}
        per_metric = {}
        for k, col in board.columns.items():
            e = r.estimate(k)
            if e is None:
                continue
            ci = e.ci()
            res[f"{k},{FILTER}"] = e.mean
            res[f"{k}_stderr,{FILTER}"] = _clean(e.se)
            d = board.delta_ci(r, k)
            per_metric[k] = {
                "value": e.mean, "stderr": _clean(e.se), "ci95": list(ci) if ci else None, "uncertainty": e.source,
                "n_seeds": e.n_seeds, "per_seed": list(r.per_seed.get(k) or []),
                "per_seed_stderr": r.per_seed.get(f"{k}_stderr"),
                "delta_vs_baseline": board.delta(r, k),
                "to_floor": board.to_floor(r, k),
                "delta_ci95": list(d[1:]) if d else None, "delta_significant": board.significant(r, k),
            }
        res["metrics"] = per_metric
        results[r.method] = res
        n_seeds[r.method] = len(r.seeds)
        hib[r.method] = {k: c.higher_is_better for k, c in board.columns.items()}
        cfg = {}
        if hasattr(suite, "method") and hasattr(suite, "metrics"):
            try:
                cfg = cell_config(suite, suite.method(r.method))
            except Exception:  # noqa: BLE001 - a foreign board: the config is optional
                cfg = {}
        configs[r.method] = {"config_hash": r.config_hash, "label": r.label, "baseline": r.baseline,
                             "reference": r.reference, "seeds": r.seeds, "run_ids": r.run_ids, "config": cfg}
    for k, c in board.columns.items():
        metrics_doc[k] = {"title": c.title, "unit": c.unit, "kind": c.kind, "group": c.group,
                          "higher_is_better": c.higher_is_better, "uncertainty_method": c.uncertainty or None,
                          **src.get(k, {"metric": None, "instrument": None})}
    versions = {}
    for t in runs_tags:
        for tk, v in t.items():
            if tk.startswith("bench.version."):
                versions.setdefault(tk.removeprefix("bench.version."), set()).add(v)
    versions = {k: ", ".join(sorted(v)) for k, v in versions.items()} or package_versions()
    shas = sorted({t.get("bench.git_sha", "unknown") for t in runs_tags})
    b = board.baseline
    return {
        "schema": SCHEMA, "suite": suite.name, "description": getattr(suite, "description", None),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_hash": git_sha(), "run_git_hashes": shas,
        "baseline": b.method if b else None, "uncertainty": board.uncertainty_source(),
        "results": results, "metrics": metrics_doc, "configs": configs, "versions": versions,
        "n-seeds": n_seeds, "higher_is_better": hib,
        "seeds": sorted({s for r in board.rows for s in r.seeds}),
        "claims": [v.to_dict() if hasattr(v, "to_dict") else dict(vars(v)) for v in board.claims],
        "premises": [p.to_dict() for p in getattr(board, "premises", [])],
        "seed_noise": getattr(board, "noise_note", ""),
    }


def json_safe(obj):
    """``obj`` with every non-finite float (a metric's ``inf`` = "never reached", a NaN) replaced by its
    name as a string ("inf", "-inf", "nan"): strict JSON has no such numbers, and the value must not
    silently become a number or vanish."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(board) -> str:
    return json.dumps(json_safe(to_dict(board)), indent=2, default=str, allow_nan=False)


# -- lm-eval's own format ---------------------------------------------------------------------------
LM_EVAL_NA = "N/A"  # what lm-eval writes for a stderr it does not have (its make_table prints it)


def _lm_value(x):
    """A value as lm-eval's ``make_table`` prints it: finite floats stay numbers, the rest their names."""
    if x is None:
        return LM_EVAL_NA
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def to_lm_eval_dict(board) -> dict:
    """The board in lm-evaluation-harness's results layout (``lm_eval.utils.make_table`` reads it as is).

    One "task" per method (``results[method]``: ``alias`` and flat ``"<metric>,none"`` /
    ``"<metric>_stderr,none"``, a missing stderr ``"N/A"`` as lm-eval writes it); ``versions`` and
    ``n-shot`` keyed by task (the harness version; 0 shots); ``higher_is_better`` per task and metric
    (only the metrics that have a direction); ``configs`` per task (config hash, seeds, runs);
    ``n-samples`` holds the seed count. Per-seed values, intervals and claims are in the native
    schema (:func:`to_dict`) only.
    """
    from bench import HARNESS_VERSION
    from bench.provenance import git_sha

    results, versions, n_shot, hib, configs, n_samples = {}, {}, {}, {}, {}, {}
    for r in board.rows:
        res: dict = {"alias": r.label}
        for k in board.columns:
            e = r.estimate(k)
            if e is None:
                continue
            res[f"{k},{FILTER}"] = _lm_value(e.mean)
            se = _clean(e.se)
            res[f"{k}_stderr,{FILTER}"] = LM_EVAL_NA if se is None else se
        results[r.method] = res
        versions[r.method] = HARNESS_VERSION
        n_shot[r.method] = 0
        hib[r.method] = {k: c.higher_is_better for k, c in board.columns.items() if c.higher_is_better is not None}
        configs[r.method] = {"task": r.method, "label": r.label, "config_hash": r.config_hash,
                             "baseline": r.baseline, "seeds": r.seeds, "run_ids": r.run_ids}
        n_samples[r.method] = {"original": len(r.seeds), "effective": len(r.seeds)}
    return {"results": results, "group_subtasks": {}, "configs": configs, "versions": versions, "n-shot": n_shot,
            "higher_is_better": hib, "n-samples": n_samples,
            "config": {"model": "genbench", "model_args": f"suite={board.suite.name}"},
            "git_hash": git_sha(), "date": time.time(), "genbench_schema": SCHEMA}


def to_lm_eval_json(board) -> str:
    return json.dumps(to_lm_eval_dict(board), indent=2, default=str, allow_nan=False)
