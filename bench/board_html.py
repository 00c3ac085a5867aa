"""The leaderboard as ONE self-contained HTML file (``results/<suite>/leaderboard.html``).

No network: the table is an itables/DataTables table in itables' offline mode (its JavaScript and
CSS bundle embedded in the page, base64), figures and artifact images are embedded PNG data URIs.
Rendered from the Jinja2 template ``bench/templates/leaderboard.html.j2`` with autoescaping on, so
every user string (suite, method, label, claim, note) is HTML-escaped; table cells are built here
from escaped strings (the table runs with ``allow_html``).

Content: the sortable, filterable table (grouped headers quality / likelihood / representation /
cost / descriptive, sticky method column), the legend, the claims with their evidence, the
suite-level figures (``board.figures``), per method its runs (an MLflow UI link when the tracking
URI is an http(s) server, run ids otherwise) and every ``samples/*.png`` and ``plots/*.png``
artifact (and other PNGs) of its runs, and a provenance footer (git SHAs, package versions,
hardware, config hashes).
"""
from __future__ import annotations

import base64
import html
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.board_terminal import header, num, ordered_keys, short_id

TEMPLATE = "leaderboard.html.j2"
SORT_JS = ("function (data, type, row, meta) { if (type === 'sort' || type === 'type') {"
           " var s = String(data).replace(/<[^>]*>/g, ''); var v = parseFloat(s.replace('\u2212', '-'));"
           " return isNaN(v) ? -Infinity : v; } return data; }")


@dataclass
class RunInfo:
    run_id: str
    seed: int
    url: str | None
    tags: dict = field(default_factory=dict)
    images: list[tuple[str, str]] = field(default_factory=list)  # (artifact path, data URI)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _pngs(client, run_id: str, path: str | None = None, depth: int = 0) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        if f.is_dir and depth < 3 and not f.path.startswith("leaderboard"):
            out += _pngs(client, run_id, f.path, depth + 1)
        elif f.path.lower().endswith(".png"):
            out.append(f.path)
    return out


def _order(p: str) -> tuple:
    return (0 if p.startswith("samples/") else 1 if p.startswith("plots/") else 2, p)


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI address of a run when the tracking URI is a server (http/https), else None."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def collect_runs(board) -> dict[str, list[RunInfo]]:
    """method -> its runs' info and embedded PNG artifacts (empty without a tracker)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars per PNG
    out: dict[str, list[RunInfo]] = {}
    tr = board.tracker
    for r in board.rows:
        infos = []
        for seed, rid in zip(r.seeds, r.run_ids):
            if tr is None:
                infos.append(RunInfo(rid, seed, None))
                continue
            run = tr.client.get_run(rid)
            info = RunInfo(rid, seed, run_url(tr.uri, run.info.experiment_id, rid), dict(run.data.tags))
            with tempfile.TemporaryDirectory() as d:
                for p in sorted(_pngs(tr.client, rid), key=_order):
                    local = tr.client.download_artifacts(rid, p, d)
                    info.images.append((p, data_uri(Path(local))))
            infos.append(info)
        out[r.method] = infos
    return out


def _cell_html(board, row, key: str) -> str:
    from bench.board_tables import half_width

    e = row.estimate(key)
    if e is None:
        return "<span class='na'>—</span>"
    hw = half_width(e)
    s = html.escape(num(e.mean)) + (f"<span class='pm'> ±{html.escape(num(hw, 2))}</span>" if hw is not None else "")
    d = board.delta(row, key)
    if d is not None:
        cls = "d"
        if board.significant(row, key):
            cls += " better" if (d > 0) == bool(board.columns[key].higher_is_better) else " worse"
        s += f" <span class='{cls}'>Δ{'+' if d >= 0 else ''}{html.escape(num(d, 2))}{'*' if 'better' in cls or 'worse' in cls else ''}</span>"
    return s


def table_html(board) -> str:
    """The itables (DataTables) table, offline: sortable by value, searchable, grouped headers."""
    import pandas as pd
    from itables import JavascriptFunction, to_html_datatable

    keys = ordered_keys(board)
    # the method is the index: itables 2.9 renders grouped (MultiIndex) headers only with showIndex=True
    cols = [("", "seeds")] + [(board.columns[k].group, header(k, board.columns[k])) for k in keys]
    rows, names = [], []
    for r in board.rows:
        name = f"<b>{html.escape(r.method)}</b>" + (" <i>(baseline)</i>" if r.baseline else "") + (
            " <i>(floor)</i>" if r.reference else "")
        if r.label != r.method:
            name += f"<br><small>{html.escape(r.label)}</small>"
        if not r.reference:  # the floor row has no runs of its own (its values come from the method runs)
            name += f" <a href='#m-{html.escape(_anchor(r.method))}'>runs</a>"
        names.append(name)
        rows.append(["—" if r.reference else len(r.seeds)] + [_cell_html(board, r, k) for k in keys])
    df = pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(cols), index=pd.Index(names, name="method"))
    return to_html_datatable(
        df, connected=False, allow_html=True, showIndex=True, scrollX=True, paging=False,
        fixedColumns={"start": 1}, classes="display nowrap compact cell-border",
        layout={"topStart": None, "topEnd": "search", "bottomStart": "info", "bottomEnd": None},
        columnDefs=[{"targets": list(range(2, len(cols) + 1)), "render": JavascriptFunction(SORT_JS)}],
        order=[], table_id="leaderboard", text_in_header_can_be_selected=False)  # click anywhere on a header sorts


def offline_bundle() -> str:
    """itables' offline init snippet: the DataTables JS/CSS bundle inlined (base64), no network."""
    from itables.javascript import generate_init_offline_itables_html
    from itables.utils import find_package_file

    return generate_init_offline_itables_html(find_package_file("html/dt_bundle.js"))


def _anchor(method: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in method)


def provenance(board, runs: dict[str, list[RunInfo]]) -> dict:
    from bench.provenance import git_sha, package_versions
    from bench.tracking import TAG

    tags = [i.tags for infos in runs.values() for i in infos]
    shas = sorted({t.get(f"{TAG}git_sha", "unknown") for t in tags}) or ["unknown"]
    vers: dict[str, set] = {}
    hw: dict[str, set] = {}
    for t in tags:
        for k, v in t.items():
            if k.startswith(f"{TAG}version."):
                vers.setdefault(k.removeprefix(f"{TAG}version."), set()).add(v)
            elif k.startswith(f"{TAG}numerics."):
                hw.setdefault(k.removeprefix(f"{TAG}numerics."), set()).add(v)
    if not vers:
        vers = {k: {v} for k, v in package_versions().items()}
    return {
        "run_git_shas": shas, "report_git_sha": git_sha(),
        "versions": {k: ", ".join(sorted(v)) for k, v in sorted(vers.items())},
        "hardware": {**{k: ", ".join(sorted(v)) for k, v in sorted(hw.items())},
                     "report host": f"{platform.machine()} {platform.processor() or ''} {platform.system()}".strip()},
        "config_hashes": {r.method: r.config_hash for r in board.rows},
        "tracking_uri": getattr(board.tracker, "uri", None),
    }


def legend(board) -> list[dict]:
    out = []
    for k in ordered_keys(board):
        c = board.columns[k]
        ns = sorted({len(r.per_seed.get(k) or []) for r in board.methods} - {0})
        out.append({"id": short_id(k, c), "key": k, "title": c.title, "unit": c.unit, "kind": c.kind,
                    "arrow": c.arrow, "group": c.group, "seeds": "/".join(map(str, ns)) or "0",
                    "uncertainty": c.uncertainty or "—"})
    return out


def render(board, figures: list[Path] | None = None) -> str:
    """The full HTML page (str). ``figures``: suite-level PNGs to embed (default ``board.figures``)."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("bench", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["num"] = num
    runs = collect_runs(board)
    figs = [(Path(f).name, data_uri(f)) for f in (board.figures if figures is None else figures) if Path(f).is_file()]
    b = board.baseline
    return env.get_template(TEMPLATE).render(
        board=board, suite=board.suite, bundle=Markup(offline_bundle()), table=Markup(table_html(board)),
        legend=legend(board), claims=board.claims, premises=board.premises, noise_note=board.noise_note, figures=figs, runs=runs, anchor=_anchor,
        baseline=b.method if b else None, source=board.uncertainty_source(), prov=provenance(board, runs))
