"""Reading a suite file: YAML (safe loader, size and alias limits) into a validated :class:`bench.suite.Suite`.

The schema itself is :mod:`bench.suite`. Every error names the file and the field path, e.g.
``suites/x.yaml: methods[1].params.k_max: must be >= k_min``, raised as :class:`bench.errors.SuiteError`
(the CLI prints it and exits 2, without a traceback).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench.errors import SuiteError
from bench.suite import INT64_MAX, REPO_ROOT, SUITES_DIR, Suite


def format_loc(loc: tuple) -> str:
    """Pydantic error location -> ``methods[1].params.k_max``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


COERCION_ERRORS = ("int_type", "float_type", "bool_type")
"""Strict-mode error types of a string or boolean given for a number (or a string for a boolean)."""


def _errors_to_lines(err: ValidationError, prefix: tuple = ()) -> list[str]:
    lines = []
    for e in err.errors():
        loc = format_loc(prefix + tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"] in COERCION_ERRORS and isinstance(e.get("input"), (str, bool)):
            got, want = e["input"], {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false"}
            msg += (f" (got the string {got!r}: write {want[e['type']]} without quotes)" if isinstance(got, str)
                    else f" (got the boolean {got!r}: write {want[e['type']]})")
        lines.append(f"{loc}: {msg}")
    return lines


def resolve_suite_path(suite: str | os.PathLike) -> Path:
    """A suite name under ``suites/`` or a path to a YAML file -> the file's path."""
    p = Path(suite)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise SuiteError(f"{p}: no such suite file")
        return p
    cand = SUITES_DIR / f"{suite}.yaml"
    if not cand.exists():
        known = ", ".join(sorted(x.stem for x in SUITES_DIR.glob("*.yaml")))
        raise SuiteError(f"unknown suite {str(suite)!r}: no file {cand}; known suites: {known}")
    return cand


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


MAX_SUITE_BYTES = 1 << 20
"""A suite file larger than this (1 MiB) is refused: suites are a few kilobytes."""
MAX_ALIASES = 32
"""YAML aliases (``*name``) allowed in a suite; more is refused (a "billion laughs" file expands
exponentially), before anything is expanded."""
MAX_NODES = 100_000
"""Scalars, sequences and mappings a suite may hold after alias expansion."""


class _SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and caps aliases and expanded size."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}): a suite "
                                     "needs none; write the values out")
        return super().compose_node(parent, index)

    def construct_object(self, node, deep=False):
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.YAMLError(f"the YAML expands to more than {MAX_NODES} values (aliases of aliases?)")
        return super().construct_object(node, deep)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping reports it
            if first is not None:
                raise yaml.YAMLError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at "
                                     f"line {first}): keep one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_SuiteLoader.add_constructor("tag:yaml.org,2002:map", _SuiteLoader.construct_yaml_map)


def _too_big(raw: Any, loc: tuple = ()) -> list[str]:
    """Field paths of integers beyond int64 and non-finite floats anywhere in ``raw``."""
    out = []
    if isinstance(raw, dict):
        for k, v in raw.items():
            out += _too_big(v, loc + (str(k),))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            out += _too_big(v, loc + (i,))
    elif isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) > INT64_MAX:
        digits = len(str(abs(raw)))
        out.append(f"{format_loc(loc)}: the integer ({digits} digits) is larger than 2^63-1; use a sensible value")
    elif isinstance(raw, float) and not math.isfinite(raw):
        out.append(f"{format_loc(loc)}: {raw} is not a finite number")
    return out


def read_suite_file(suite: str | os.PathLike) -> tuple[str, dict]:
    """A suite name or file -> (its display path, its YAML mapping); :class:`SuiteError` otherwise.

    Refused with one message naming the file: a directory, an unreadable, empty, oversized or
    non-UTF-8 file, invalid YAML, duplicate keys, more than :data:`MAX_ALIASES` aliases, a
    top level that is not a mapping, integers beyond int64 and non-finite floats.
    """
    path = resolve_suite_path(suite)
    where = _display(path)
    if path.is_dir():
        raise SuiteError(f"{where}: is a directory; give a suite YAML file (e.g. {where}/<name>.yaml) or a suite name")
    if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
        raise SuiteError(f"{where}: not a regular file (a pipe, device or socket); give a suite YAML file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"{where}: cannot read the suite file: {e.strerror or e}") from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{where}: larger than {MAX_SUITE_BYTES >> 20} MiB; is this a suite file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SuiteError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}); "
                         "save the suite as UTF-8") from None
    if not text.strip():
        raise SuiteError(f"{where}: the file is empty; a suite needs at least name, dataset, methods and metrics")
    try:
        # verified-load: _SuiteLoader is a SafeLoader subclass (no python tags), with alias limits
        raw = yaml.load(text, Loader=_SuiteLoader)  # noqa: S506
    except yaml.YAMLError as e:
        raise SuiteError(f"{where}: not valid YAML: {e}") from None
    except RecursionError:
        raise SuiteError(f"{where}: not valid YAML: nested too deeply") from None
    if raw is None:
        raise SuiteError(f"{where}: the file holds no YAML content (only comments?); a suite needs at least "
                         "name, dataset, methods and metrics")
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a YAML mapping (name: ..., dataset: ..., ...), "
                         f"got a {type(raw).__name__}")
    big = _too_big(raw)
    if big:
        raise SuiteError("\n".join(f"{where}: {line}" for line in big))
    return where, raw


def load_suite(suite: str | os.PathLike, check_registry: bool = True, plugins: tuple[str, ...] | list[str] = ()) -> Suite:
    """Load, parse and validate a suite.

    Raises :class:`SuiteError` naming the file and every offending field path.
    With ``check_registry`` the suite's plugins are imported and the adapters, their params and
    budgets, the metrics and their params, and the capabilities each metric needs are checked too,
    all problems together (:func:`bench.plan.load`). ``plugins``: modules to import first (``--plugin``).
    """
    if check_registry:
        from bench.plan import load  # the checks against the registries live with plan resolution

        return load(suite, plugins)
    where, raw = read_suite_file(suite)
    try:
        s = Suite.model_validate(raw)
    except ValidationError as e:
        raise SuiteError("\n".join(f"{where}: {line}" for line in _errors_to_lines(e))) from None
    s.source = where
    return s


def check_suite(s: Suite) -> None:
    """Check a parsed suite against the registries; raise :class:`SuiteError` listing all problems."""
    from bench.plan import check

    check(s)
