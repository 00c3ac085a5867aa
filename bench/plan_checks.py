"""Suite validation for :mod:`bench.plan`: every problem of a suite file found at once, before any work.

:func:`load` reads a suite file and collects every problem (YAML schema, plugin imports,
registries, adapter and metric params, budgets, capabilities, claims, and what the cells would run
into: metric sizes against the data splits, probe lengths, leaderboard columns, resolutions) and
raises one :class:`SuiteError` naming the file and each field path; :func:`check` does the same for
a suite built in memory. Re-exported by :mod:`bench.plan`.
"""
from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from bench import registry
from bench.errors import BenchError, SuiteError
from bench.limit import limit_of
from bench.suite import MethodSpec, MetricSpec, Suite
from bench.suite_file import COERCION_ERRORS, _errors_to_lines, read_suite_file


# -- validation: every problem at once ---------------------------------------------------------
def load(suite: str | os.PathLike, plugins: tuple[str, ...] | list[str] = ()) -> Suite:
    """Read a suite file and check everything; raise one :class:`SuiteError` listing every problem.

    ``plugins`` (``--plugin``) and the suite's own ``plugins:`` are imported first. Schema errors
    of some fields do not hide the registry checks of the fields that parsed.
    """
    where, raw = read_suite_file(suite)
    cli = registry.import_plugins((f"--plugin {m}", m) for m in plugins)
    listed = raw.get("plugins")
    problems = []
    if isinstance(listed, list):
        problems += registry.import_plugins((f"plugins[{i}]", m) for i, m in enumerate(listed) if isinstance(m, str))
    plugins_ok = not (cli or problems)
    try:
        s: Suite | None = Suite.model_validate(raw)
    except ValidationError as e:
        s = None
        problems += _errors_to_lines(e)
    if plugins_ok:  # with a plugin missing, its adapters and metrics would all read as unknown
        problems += _registry_problems(*_parts(s, raw))
        if s is not None:
            problems += _claim_problems(s)
            problems += plan_problems(s)
            if limit_of(s.name) is not None:
                problems.append(f"name: {s.name!r} ends in .limit<N>, reserved for the suites of `bench run --limit`")
    if cli or problems:
        raise SuiteError("\n".join(cli + [f"{where}: {p}" for p in dict.fromkeys(problems)]))
    s.source = where
    s.plugins = list(dict.fromkeys([*s.plugins, *plugins]))
    return s


def check(s: Suite) -> None:
    """Check a parsed suite against the registries; raise :class:`SuiteError` listing all problems."""
    problems = registry.import_plugins((f"plugins[{i}]", m) for i, m in enumerate(s.plugins))
    if not problems:
        problems = _registry_problems(*_parts(s, {})) + _claim_problems(s)
    if not problems:
        problems = plan_problems(s)
    if problems:
        raise SuiteError("\n".join(f"{s.source}: {p}" for p in dict.fromkeys(problems)))


def _parts(s: Suite | None, raw: dict) -> tuple[list, list, dict | None, str | None]:
    """(index, MethodSpec) and (index, MetricSpec) pairs, budget and data-set name: of ``s`` or what parsed of ``raw``."""
    if s is not None:
        return list(enumerate(s.methods)), list(enumerate(s.metrics)), s.budget, s.dataset.name

    def each(key, model):
        out = []
        for i, x in enumerate(raw.get(key) if isinstance(raw.get(key), list) else []):
            try:
                out.append((i, model.model_validate(x)))
            except ValidationError:
                pass  # reported by the schema
        return out

    budget = raw.get("budget", {})
    ds = raw.get("dataset")
    name = ds.get("name") if isinstance(ds, dict) and isinstance(ds.get("name"), str) else None
    return each("methods", MethodSpec), each("metrics", MetricSpec), budget if isinstance(budget, dict) else None, name


def _param_problems(model, value: dict, loc: tuple) -> list[str]:
    """``model.model_validate(value)``'s errors as ``loc.field: message`` lines (empty when valid).

    Values pydantic would coerce (the string ``"600"`` or ``true`` for an integer, ``"0.1"`` for a
    float) are refused too: a suite writes numbers as numbers. (Resolution itself stays lax, so
    config hashes are unchanged.)
    """
    try:
        model.model_validate(value)
    except ValidationError as e:
        return _errors_to_lines(e, loc)
    try:
        model.model_validate(value, strict=True)
        return []
    except ValidationError as e:  # only str/bool -> number coercions (not tuple-vs-list and the like)
        return [line for line, err in zip(_errors_to_lines(e, loc), e.errors())
                if err["type"] in COERCION_ERRORS and isinstance(err.get("input"), (str, bool))]


def _registry_problems(methods: list, metrics: list, budget: dict | None, dataset: str | None) -> list[str]:
    problems: list[str] = []
    for i, m in methods:
        cls = registry.meta("adapter", m.adapter)
        if cls is None:
            problems.append(f"methods[{i}].adapter: unknown adapter {m.adapter!r}; known: {registry.known('adapter')} "
                            f"({registry.provider_hint('adapter', m.adapter)})")
            continue
        problems += _param_problems(cls.Params, m.params, ("methods", i, "params"))
        budget_model = getattr(cls, "Budget", None)
        if budget_model is not None and budget is not None:
            for line in _param_problems(budget_model, {**budget, **m.budget}, ()):
                key = line.split(":")[0].split(".")[0].split("[")[0]
                src = f"methods[{i}].budget" if key in m.budget else "budget"
                problems.append(f"{src}.{line}")
        for j, spec in metrics:
            mcls = registry.meta("metric", spec.name)
            if mcls is None:
                continue
            missing = set(mcls.requires) - set(cls.capabilities)
            if missing:
                problems.append(
                    f"metrics[{j}]: metric {spec.name!r} needs capability {sorted(missing)} that adapter "
                    f"{m.adapter!r} (methods[{i}]) does not have (it has {sorted(cls.capabilities)})"
                )
    for j, spec in metrics:
        mcls = registry.meta("metric", spec.name)
        if mcls is None:
            problems.append(f"metrics[{j}].name: unknown metric {spec.name!r}; known: {registry.known('metric')}")
            continue
        problems += _param_problems(mcls.Params, spec.params, ("metrics", j, "params"))
    if dataset is not None and registry.meta("dataset", dataset) is None:
        problems.append(f"dataset.name: unknown data set {dataset!r}; known: {registry.known('dataset')}")
    return problems


def _claim_problems(s: Suite) -> list[str]:
    """Claims and premises must name the suite's methods and metric keys, and a claim's arms must
    not resolve to one config hash (:func:`bench.claims.check_claims`)."""
    if not s.claims and not s.premises:
        return []
    from bench.claims import check_claims
    from bench.metrics.base import all_columns
    from bench.plan import config_hash

    try:
        keys = list(all_columns(s)) + ["cell_seconds"]
    except (BenchError, ValidationError):
        return []  # a metric problem is reported by the registry checks
    from bench.limit import limit_of

    hashes = {}
    for m in (s.methods if limit_of(s.name) is None else []):  # --limit caps budgets until arms can coincide:
        # a limited run is a plumbing check, and its identical arms are reported "degenerate" on the board
        try:
            hashes[m.name] = config_hash(s, m)
        except (BenchError, ValidationError):
            pass  # reported by the registry checks
    return check_claims(s, keys, hashes)


# -- plan checks: what the cells would run into, found before any training ----------------------
# Metric params that count images of a split, for metrics whose inputs are tokens (not declared
# image inputs): metric name -> {param: split}. Image inputs are read from ``Metric.inputs``.
_TOKEN_METRIC_SPLITS = {"ar_loss": {"n": "test"}, "entropy": {"n": "train"},
                        "probe": {"n_train": "train", "n_test": "test"}}


def _sequence_length(params: Any) -> int | None:
    """Tokens per image of a tokenizer adapter, where its params fix it (``tokenizer.length`` [+ prologue])."""
    length = getattr(getattr(params, "tokenizer", None), "length", None)
    if not isinstance(length, int):
        return None
    return length + int(getattr(params, "n_prologue", 0) or 0)


def _image_inputs(specs) -> list:
    from bench import inputs as inp

    out = []
    for x in specs:
        if x.kind == inp.FEATURES and x.of is not None:
            out += _image_inputs([x.of])
        else:
            out.append(x)
    return out


def plan_problems(s: Suite) -> list[str]:
    """Problems the suite's cells would hit at run time, as ``field: message`` lines.

    Data set: its params, resolution, split sizes (from metadata: no image is loaded) against
    ``dataset.n_train`` / ``n_test`` and every metric's image counts, an ADM reference only where
    the data set has one; probe ``ks`` within the adapters' sequence length; ``leaderboard``
    column ids; ``base_model`` only with an adapter that fine-tunes one.
    """
    from bench import inputs as inp
    from bench.data.base import DatasetBroken
    from bench.errors import DatasetMissing
    from bench.metrics.base import all_columns

    problems: list[str] = []
    ds = s.dataset
    ds_cls = registry.meta("dataset", ds.name)
    adapters = [(i, m, c) for i, m in enumerate(s.methods) if (c := registry.meta("adapter", m.adapter)) is not None]
    metrics = [(j, spec, c) for j, spec in enumerate(s.metrics) if (c := registry.meta("metric", spec.name)) is not None]

    def params_of(model, value):  # None when invalid: reported by the registry checks
        try:
            return model.model_validate(value)
        except ValidationError:
            return None

    # the data set
    sizes: dict[str, int] | None = None
    if ds_cls is not None:
        pmodel = getattr(ds_cls, "Params", None)
        if pmodel is None and ds.params:
            problems.append(f"dataset.params: data set {ds.name!r} takes no params; remove {sorted(ds.params)}")
        elif pmodel is not None:
            problems += _param_problems(pmodel, ds.params, ("dataset", "params"))
        allowed = getattr(ds_cls, "resolutions", None)
        if ds.resolution is not None and allowed is not None and ds.resolution not in allowed:
            problems.append(f"dataset.resolution: data set {ds.name!r} has resolution {list(allowed)}, got "
                            f"{ds.resolution} (leave it out or write {allowed[0]})")
        if hasattr(ds_cls, "split_sizes"):
            try:
                sizes = dict(ds_cls.split_sizes(ds))
            except DatasetBroken as e:
                problems.append(f"dataset: {e}")
            except DatasetMissing:
                sizes = None  # not on this machine: `bench run` says where it should be
    if sizes is not None:
        for split, field in (("train", "n_train"), ("test", "n_test")):
            want = getattr(ds, field)
            if want is not None and want > sizes[split]:
                problems.append(f"dataset.{field}: {want} is more than the {sizes[split]} {split} images of "
                                f"{ds.name!r}; use at most {sizes[split]} (or leave it out for all)")
            elif want is not None:
                sizes[split] = want
    n_examples = getattr(ds_cls, "train_examples", None)  # a batch larger than the data would be cut silently
    n_examples = n_examples(ds) if n_examples is not None else None
    if n_examples is not None:
        for i, m, cls in adapters:
            bmodel = getattr(cls, "Budget", None)
            b = params_of(bmodel, {**s.budget, **m.budget}) if bmodel is not None else None
            bs = getattr(b, "batch_size", None)
            if isinstance(bs, int) and bs > n_examples:
                src = f"methods[{i}].budget" if "batch_size" in m.budget else "budget"
                problems.append(f"{src}.batch_size: {bs} is more than the {n_examples} training documents of the "
                                f"data set (method {m.name!r}); use at most {n_examples}")
    adm = bool(getattr(ds_cls, "has_adm_reference", False))
    # adapters that need the data present at validation time (a paper-scale suite fails fast without it)
    hooks = [h for _, _, cls in adapters if (h := getattr(cls, "data_problems", None)) is not None]
    for line in dict.fromkeys(p for h in hooks for p in h(ds)):
        problems.append(f"dataset: {line}")

    # the metrics' image counts
    for j, spec, mcls in metrics:
        params = params_of(mcls.Params, spec.params)
        if params is None:
            continue
        counts: list[tuple[str, str, int]] = []  # (param, split, n)
        for x in _image_inputs(mcls.inputs(params)):
            if x.kind in (inp.REAL_TEST, inp.RECONSTRUCTIONS):
                counts.append(("n", "test", x.n))
            elif x.kind == inp.REAL_TRAIN_BALANCED:
                counts.append(("n", "train", x.n))
            elif x.kind == inp.REAL_ADM and not adm:
                problems.append(f"metrics[{j}].params.reference: 'adm' (the ADM ImageNet-256 reference batch) "
                                f"exists only for ImageNet, not for data set {ds.name!r}; use reference: train")
        for field, split in _TOKEN_METRIC_SPLITS.get(spec.name, {}).items():
            n = getattr(params, field, None) if field in spec.params else None  # defaults are clamped
            if isinstance(n, int):
                counts.append((field, split, n))
        if sizes is not None:
            for field, split, n in dict.fromkeys(counts):
                if n > sizes[split]:
                    limit = f" (dataset.n_{split}: {sizes[split]})" if getattr(ds, f"n_{split}") else ""
                    problems.append(f"metrics[{j}].params.{field}: {spec.name} needs {n} {split} images but the "
                                    f"data set has {sizes[split]}{limit}; lower {field} to at most {sizes[split]}")
        steps_of = getattr(params, "method_steps", None)  # a typo would silently give that method `steps`
        if isinstance(steps_of, dict):
            names = [m.name for m in s.methods]
            for name in steps_of:
                if name not in names:
                    problems.append(f"metrics[{j}].params.method_steps.{name}: no method {name!r} in this suite; "
                                    f"its methods: {names}")
        tasks = getattr(params, "tasks", None) if spec.name == "lm_accuracy" else None
        if tasks is not None:
            have = _dataset_tasks(ds)
            if not tasks:
                problems.append(f"metrics[{j}].params.tasks: empty; leave it out for all of the data set's tasks")
            elif have is not None and (unknown := [t for t in tasks if t not in have]):
                problems.append(f"metrics[{j}].params.tasks: {unknown} not among the data set's tasks {have}")
        pair = getattr(mcls, "method_problems", None)  # a metric param that must fit each method's model
        if pair is not None:
            for i, m, cls in adapters:
                ap = params_of(cls.Params, m.params)
                if ap is not None:
                    problems += [f"metrics[{j}].params.{line} (method {m.name!r}, methods[{i}])" for line in pair(params, ap)]
        ks = [k for k in getattr(params, "ks", None) or [] if isinstance(k, int)] if "ks" in spec.params else []
        for i, m, cls in adapters:
            length = _sequence_length(params_of(cls.Params, m.params))
            too_long = [k for k in ks if length is not None and k > length]
            if too_long:
                problems.append(f"metrics[{j}].params.ks: k {too_long} longer than the L = {length} tokens of "
                                f"method {m.name!r} (methods[{i}]); use k <= {length} or 'all'")

        if getattr(params, "temperatures", None) and "temperatures" in spec.params:
            from bench.sampling import supports_temperature

            cold = [m.name for _, m, cls in adapters if "generate" in cls.capabilities
                    and not supports_temperature(cls.Params)]
            if cold:
                problems.append(f"metrics[{j}].params.temperatures: methods {cold} have no `temperature` param to "
                                "sweep; remove `temperatures` or the methods")
        bound = getattr(mcls, "dataset_problems", None)  # a metric whose instrument fits one data set only
        if bound is not None:
            problems += [f"metrics[{j}].params: {line}" for line in bound(params, ds)]
        env = getattr(mcls, "environment_problems", None)  # user-given files a metric needs (weights ...)
        if env is not None:
            problems += [f"metrics[{j}]: {line}" for line in env(params)]

    # the leaderboard's column ids
    try:
        columns = list(all_columns(s))
    except (BenchError, ValidationError):
        columns = None
    if columns is not None:
        lb = s.leaderboard
        if lb.sort_by is not None and lb.sort_by not in columns:
            problems.append(f"leaderboard.sort_by: unknown column {lb.sort_by!r}; the suite's columns: {columns}")
        for c, col in enumerate(lb.columns or []):
            if col not in columns:
                problems.append(f"leaderboard.columns[{c}]: unknown column {col!r}; the suite's columns: {columns}")

    problems += _gate_problems(s, columns)

    # base_model: only fine-tuning adapters read it, and they need one
    tuners = [m.name for _, m, cls in adapters if "finetune" in cls.capabilities]
    if s.base_model is None and tuners:
        problems.append(f"base_model: methods {tuners} fine-tune a base model but the suite names none; add e.g. "
                        "base_model: {name: qwen3-tiny}")
    if s.base_model is not None and tuners:
        problems += base_model_problems(s.base_model)
    if s.base_model is not None and not any("finetune" in cls.capabilities for _, _, cls in adapters):
        problems.append(f"base_model: no adapter of this suite fine-tunes a base model "
                        f"({sorted({m.adapter for _, m, _ in adapters})}); remove base_model")
    return problems


def base_model_problems(base_model: dict) -> list[str]:
    """``base_model`` against the schema registered for its ``name`` (:func:`bench.suite.declare_base_model`)."""
    from bench.suite import BASE_MODELS

    name = base_model.get("name")
    schema = BASE_MODELS.get(name) if isinstance(name, str) else None
    if schema is None:
        return [f"base_model.name: unknown base model {name!r}; known: {sorted(BASE_MODELS)}"]
    try:
        schema.model_validate(base_model, strict=False)
    except ValidationError as e:
        return _errors_to_lines(e, ("base_model",))
    return _param_problems(schema, base_model, ("base_model",))


def _dataset_tasks(ds) -> list[str] | None:
    """The task names of a text data set's ``params.tasks`` (default: the generated ones), else None."""
    if ds.name != "peft_tasks":
        return None
    cls = registry.meta("dataset", ds.name)
    pmodel = getattr(cls, "Params", None)
    try:
        return list(pmodel.model_validate(ds.params).tasks) if pmodel is not None else None
    except (ValidationError, AttributeError):
        return None


def _gate_problems(s: Suite, columns: list[str] | None) -> list[str]:
    """``gate``: metric keys that exist, a noise file that exists inside the repository."""
    from bench.suite import REPO_ROOT

    g = s.gate
    if g is None:
        return []
    out: list[str] = []
    if columns is not None:
        known = set(columns) | {"cell_seconds"}
        for key in g.metrics:
            if key not in known:
                out.append(f"gate.metrics.{key}: not a metric key of this suite; its keys: {sorted(known)}")
        for i, key in enumerate(g.exclude):
            if key not in known:
                out.append(f"gate.exclude[{i}]: {key!r} is not a metric key of this suite")
    if g.noise_file and not (REPO_ROOT / g.noise_file).is_file():
        out.append(f"gate.noise_file: {g.noise_file} does not exist (relative to {REPO_ROOT}); measure it with "
                   "`bench gate-noise` (docs/ci-gate.md) or remove the key")
    return out
