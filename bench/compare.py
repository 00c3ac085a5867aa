"""``bench compare`` / ``bench gate``: a suite's latest finished runs vs a committed baseline.

Exit codes (what CI keys on):

* **0**: every gated metric of every method is identical, within tolerance, or improved;
* **1**: at least one metric worsened by more than its tolerance (``REGRESSED``), or moved by
  more than it in either direction when the metric is ``two_sided`` or under ``strict`` (``CHANGED``);
* **2**: the comparison cannot be made and is refused: missing runs or metrics, a method or
  seed the baseline lacks, a config hash that differs from the baseline's (the suite's
  configuration changed: write a new baseline), or a metric instrument (extractor id, weights
  sha256, reference-set fingerprint) that differs. Apples are never compared with pears.

The config hash covers the suite's configuration only, not the code, so a code change that
moves the numbers under an unchanged suite is exactly what the gate reports as a regression.
:func:`bench.gate.run_gate` runs the suite first with fresh model weights (its own cache of trained
weights, emptied each time; only data-derived caches such as Inception reference statistics are
shared, and instruments are shipped files), so a code regression cannot hide behind a cached
checkpoint. Allowances are paired (seed by seed) and come from the measured cross-machine noise
of each metric (:mod:`bench.gate_noise`). See docs/ci-gate.md.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.baseline import (GateError, allowed_worsening, consistent, describe_tolerance, instrument_provenance,
                            latest_suite_run, load_baseline, select_runs, versions_of)
from bench.context import results_dir
from bench.suite import Suite
from bench.tracking import TAG, Tracker

IDENTICAL, OK, IMPROVED, REGRESSED, CHANGED = "identical", "ok", "improved", "REGRESSED", "CHANGED"
"""Verdicts. ``ok``: moved, but by no more than the tolerance. ``CHANGED``: beyond tolerance in
the good direction, under ``strict`` or for a ``two_sided`` metric (a fail). ``improved`` is a
pass that suggests writing a new baseline."""
FAILING = (REGRESSED, CHANGED)



@dataclass
class Row:
    method: str
    metric: str
    title: str
    direction: str  # "higher" | "lower" | "none" (a descriptive statistic: gated two-sided)
    baseline: float
    baseline_std: float | None
    baseline_n: int
    current: float
    current_std: float | None
    current_n: int
    delta: float
    rel_delta: float | None
    allowed: float
    tolerance: str
    verdict: str

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.direction, "")


@dataclass
class Comparison:
    suite: str
    baseline_file: str
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)
    strict: bool = False
    baseline_git_sha: str = "unknown"
    current_git_shas: list[str] = field(default_factory=list)
    current_runs: dict[str, list[str]] = field(default_factory=dict)
    suite_run: str | None = None

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.verdict in FAILING]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    @property
    def verdict(self) -> str:
        return "FAIL" if self.failures else "PASS"


def judge(baseline: float, current: float, direction: str, allowed: float, strict: bool = False) -> str:
    """Verdict of one metric. ``gain`` > 0 means better (in the metric's direction)."""
    if current == baseline:
        return IDENTICAL
    if direction == "none":  # descriptive: no better side, any move beyond the allowance fails
        return CHANGED if abs(current - baseline) > allowed else OK
    gain = (current - baseline) * (1 if direction == "higher" else -1)
    if gain < -allowed:
        return REGRESSED
    if gain > allowed:
        return CHANGED if strict else IMPROVED
    return OK


def _descriptive_keys(suite: Suite) -> set[str]:
    """Metric keys of the suite's descriptive columns (no better/worse direction)."""
    from bench import registry
    from bench.metrics.base import all_columns

    registry.load_all()
    try:
        return {k for k, c in all_columns(suite).items() if c.descriptive}
    except Exception:  # noqa: BLE001 - a suite-like test object without metrics: nothing descriptive
        return set()


def check_config(suite: Suite, baseline: dict) -> list[str]:
    """The baseline's methods, if it describes this suite's configuration; else raise :class:`GateError`.

    Checked before looking for runs (a changed config would otherwise read as "no runs") and before
    a gate spends minutes training: same suite, same methods, same config hashes.
    """
    from bench import registry
    from bench.plan import config_hash

    registry.load_all()
    problems: list[str] = []
    if baseline.get("suite") not in (None, suite.name):
        problems.append(f"the baseline is of suite {baseline['suite']!r}, not {suite.name!r}")
    bmethods: dict[str, dict] = baseline["methods"]
    suite_names = [m.name for m in suite.methods]
    missing_in_suite = [m for m in bmethods if m not in suite_names]
    not_in_baseline = [m for m in suite_names if m not in bmethods]
    if missing_in_suite:
        problems.append(f"method(s) {missing_in_suite} are in the baseline but not in {suite.source}")
    if not_in_baseline:
        problems.append(f"method(s) {not_in_baseline} of {suite.source} are not in the baseline: write a new "
                        "baseline (`bench baseline`) so that every method is gated")
    methods = [m for m in bmethods if m in suite_names]
    for name in methods:
        h = config_hash(suite, suite.method(name))
        if h != bmethods[name]["config_hash"]:
            problems.append(
                f"{name}: config hash {h} of {suite.source} differs from the baseline's "
                f"{bmethods[name]['config_hash']}: the suite's configuration (or an adapter/metric default, or "
                "HARNESS_VERSION) changed since the baseline was written. If the change is intended, write a new "
                "baseline (`make ci-baseline` / `bench baseline`) and commit it with the change")
    if problems:
        raise GateError("refusing to compare:\n  " + "\n  ".join(problems))
    return methods


def compare(suite: Suite, tracker: Tracker, baseline: dict, current: str = "latest", strict: bool = False,
            baseline_file: str = "<memory>") -> Comparison:
    """Compare the suite's finished runs with a baseline document; raise :class:`GateError` if refused."""
    methods = check_config(suite, baseline)
    bmethods: dict[str, dict] = baseline["methods"]
    warnings: list[str] = []
    seeds = sorted(int(s) for s in baseline.get("seeds") or suite.seeds)
    selected, problems = select_runs(suite, tracker, methods, seeds, current)
    if problems:
        raise GateError("refusing to compare:\n  " + "\n  ".join(problems))
    # 2. same instruments; versions and threads only warn (an upgrade that moves numbers is what to catch)
    versions: dict[int, dict[str, str]] = {}
    rows: list[Row] = []
    current_runs: dict[str, list[str]] = {}
    shas: set[str] = set()
    descriptive = _descriptive_keys(suite)
    for name in methods:
        b, mr = bmethods[name], selected[name]
        current_runs[name] = [mr.runs[s].info.run_id for s in seeds]
        shas |= {mr.runs[s].data.tags.get(f"{TAG}git_sha", "unknown") for s in seeds}
        for s in seeds:
            versions[len(versions)] = versions_of(mr.runs[s])
        inst = consistent({s: instrument_provenance(suite, r) for s, r in mr.runs.items()},
                          "instrument param", name, problems)
        for k, v in (b.get("instruments") or {}).items():
            if k not in inst:
                problems.append(f"{name}: instrument param {k} (baseline {v!r}) is not logged by the current runs")
            elif inst[k] != v:
                problems.append(f"{name}: instrument {k} differs: baseline {v!r}, current {inst[k]!r}; values "
                                "measured with different instruments are not comparable (write a new baseline "
                                "in this environment if the change is intended)")
        extra = sorted(set(inst) - set(b.get("instruments") or {}))
        if extra:
            warnings.append(f"{name}: instrument param(s) {extra} are not in the baseline (not checked)")
        for key, e in b["metrics"].items():
            vals = mr.values(key, seeds)
            if vals is None:
                lacking = [mr.runs[s].info.run_id[:8] for s in seeds if key not in mr.runs[s].data.metrics]
                problems.append(f"{name}: metric {key!r} is in the baseline but missing from run(s) {lacking}")
                continue
            cur = statistics.fmean(vals)
            cur_std = statistics.stdev(vals) if len(vals) > 1 else None
            bval = float(e["value"])
            # the suite's column kind wins over an older baseline's "higher": descriptive is two-sided
            direction = "none" if key in descriptive else e.get("direction", "lower")
            allowed = allowed_worsening(e)
            delta = cur - bval
            rows.append(Row(
                method=name, metric=key, title=e.get("title", key), direction=direction,
                baseline=bval, baseline_std=e.get("std"), baseline_n=int(e.get("n", len(seeds))),
                current=cur, current_std=cur_std, current_n=len(vals), delta=delta,
                rel_delta=(delta / abs(bval)) if bval else None, allowed=allowed,
                tolerance=describe_tolerance(e),
                verdict=judge(bval, cur, direction, allowed,
                              strict or bool((e.get("tolerance") or {}).get("two_sided"))),
            ))
    if problems:
        raise GateError("refusing to compare:\n  " + "\n  ".join(problems))
    problems_v: list[str] = []
    cur_versions = consistent(versions, "package version", "current runs", problems_v)
    warnings += [p + " (mixed environments)" for p in problems_v]
    for pkg in sorted(set(cur_versions) | set(baseline.get("package_versions") or {})):
        bv, cv = (baseline.get("package_versions") or {}).get(pkg), cur_versions.get(pkg)
        if bv != cv:
            warnings.append(f"package {pkg}: baseline {bv or '-'}, current runs {cv or '-'}")
    return Comparison(suite.name, baseline_file, rows, warnings, strict, baseline.get("git_sha", "unknown"),
                      sorted(shas), current_runs, current if current != "latest" else latest_suite_run(tracker, suite))


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    s = f"{x:+.4g}" if signed else f"{x:.4g}"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        s = f"{x:+.3e}" if signed else f"{x:.3e}"
    return s


def _ms(mean: float, std: float | None, n: int) -> str:
    return f"{_fmt(mean)}" + (f" ± {_fmt(std)}" if std is not None else "") + f" (n={n})"


def _table(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    head = ["method", "metric", "", "baseline", "current", "Δ", "Δ%", "allowed", "tolerance", "verdict"]
    body = []
    for r in cmp.rows:
        body.append([r.method, r.metric, r.arrow, _ms(r.baseline, r.baseline_std, r.baseline_n),
                     _ms(r.current, r.current_std, r.current_n), _fmt(r.delta, True),
                     "—" if r.rel_delta is None else f"{100 * r.rel_delta:+.2f}%", _fmt(r.allowed),
                     r.tolerance, r.verdict])
    return head, body


def _summary(cmp: Comparison) -> str:
    n = len(cmp.rows)
    counts = {v: sum(r.verdict == v for r in cmp.rows) for v in (IDENTICAL, OK, IMPROVED, REGRESSED, CHANGED)}
    parts = ", ".join(f"{c} {v}" for v, c in counts.items() if c)
    return f"{cmp.verdict}: {n} metrics compared ({parts})"


def to_text(cmp: Comparison) -> str:
    head, body = _table(cmp)
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [f"bench compare: suite {cmp.suite} vs baseline {cmp.baseline_file} (baseline at {cmp.baseline_git_sha}, "
           f"current runs at {', '.join(cmp.current_git_shas)})", line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    out.append("")
    out += [f"warning: {w}" for w in cmp.warnings]
    out.append(_summary(cmp))
    better = [f"{r.method}.{r.metric}" for r in cmp.rows if r.verdict == IMPROVED]
    if better:
        out.append(f"note: improved beyond tolerance: {', '.join(better)}; if intended, write a new baseline "
                   "(`make ci-baseline`) and commit it with the change")
    if cmp.failures:
        out.append("failed: " + "; ".join(f"{r.method}.{r.metric} {r.verdict} {_fmt(r.baseline)} -> {_fmt(r.current)} "
                                          f"(Δ {_fmt(r.delta, True)}, allowed {_fmt(r.allowed)})" for r in cmp.failures))
    return "\n".join(out) + "\n"


def to_markdown(cmp: Comparison) -> str:
    head, body = _table(cmp)
    head[2] = "dir"
    lines = [f"## Regression gate: {cmp.suite}", "",
             f"**{_summary(cmp)}**", "",
             f"Baseline `{cmp.baseline_file}` (git {cmp.baseline_git_sha}); current runs at git "
             f"{', '.join(cmp.current_git_shas)}. Values: mean ± std over seeds (ddof=1). Δ = current − baseline; "
             "*allowed* = the largest worsening the tolerance permits.", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for b in body:
        b = list(b)
        if b[-1] in FAILING:
            b[-1] = f"**{b[-1]}**"
        lines.append("| " + " | ".join(b) + " |")
    if cmp.warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in cmp.warnings]
    return "\n".join(lines) + "\n"


def to_json(cmp: Comparison) -> str:
    doc = {
        "suite": cmp.suite, "baseline_file": cmp.baseline_file, "verdict": cmp.verdict, "exit_code": cmp.exit_code,
        "strict": cmp.strict, "baseline_git_sha": cmp.baseline_git_sha, "current_git_shas": cmp.current_git_shas,
        "current_runs": cmp.current_runs, "suite_run": cmp.suite_run, "warnings": cmp.warnings,
        "rows": [asdict(r) for r in cmp.rows],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def report_paths(report: str | Path | None, suite: Suite) -> tuple[Path, Path]:
    """``--report``: a ``.md`` or ``.json`` file (the other format goes beside it) or a directory;
    default ``results/<suite>/compare.{md,json}``."""
    if report is None:
        base = results_dir() / suite.name / "compare"
    else:
        p = Path(report)
        base = p.with_suffix("") if p.suffix in (".md", ".json") else p / "compare"
    base.parent.mkdir(parents=True, exist_ok=True)
    return base.with_suffix(".md"), base.with_suffix(".json")


def write_reports(cmp: Comparison, report: str | Path | None, suite: Suite) -> tuple[Path, Path]:
    md, js = report_paths(report, suite)
    md.write_text(to_markdown(cmp))
    js.write_text(to_json(cmp))
    return md, js


def log_to_mlflow(cmp: Comparison, tracker: Tracker, paths: tuple[Path, ...]) -> str | None:
    """Attach the reports to the suite parent run (``--current`` or the latest one) and tag it."""
    if not cmp.suite_run:
        return None
    for p in paths:
        tracker.client.log_artifact(cmp.suite_run, str(p), artifact_path="compare")
    tags = {f"{TAG}compare.verdict": cmp.verdict, f"{TAG}compare.baseline": cmp.baseline_file,
            f"{TAG}compare.baseline_git_sha": cmp.baseline_git_sha,
            f"{TAG}compare.regressions": str(len(cmp.failures))}
    for k, v in tags.items():
        tracker.client.set_tag(cmp.suite_run, k, v)
    return cmp.suite_run


def compare_cmd(suite: Suite, baseline_path: str | Path, tracking_uri: str | None = None, current: str = "latest",
                report: str | Path | None = None, strict: bool = False, log: bool = True) -> tuple[Comparison, str]:
    """Everything ``bench compare`` does except exiting: compare, write and log reports; return (comparison,
    printed text). Raises :class:`GateError` when the comparison is refused."""
    tracker = Tracker(tracking_uri)
    doc = load_baseline(baseline_path)
    cmp = compare(suite, tracker, doc, current, strict, baseline_file=_display(baseline_path))
    paths = write_reports(cmp, report, suite)
    logged = log_to_mlflow(cmp, tracker, paths) if log else None
    text = to_text(cmp) + f"reports: {paths[0]}, {paths[1]}" + (f" (logged on suite run {logged})" if logged else "")
    return cmp, text


def _display(path: str | Path) -> str:
    from bench.suite import REPO_ROOT

    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
