"""``bench run SUITE --limit N``: the whole suite through the same code path, every count capped at N.

lm-evaluation-harness's ``--limit`` convention, for a suite: a quick end-to-end check, never a
result. :func:`limited` returns a copy of the suite in which

* the data set uses at most N training and N test images (``dataset.n_train`` / ``n_test``), unless
  its class sets ``limit_splits = False`` (splits not counted in items: ``llm_text`` is a byte stream,
  where N bytes is no text at all; its work is bounded by the capped budgets and metric counts),
* every training budget count of every method (its adapter's resolved ``Budget``: ``*_steps``,
  ``*_batch``, ``*_images``, ``*_examples``, ``epochs`` ...) is at most N,
* every sample count of every metric (its resolved params: ``n``, ``n_*``, ``*_samples``,
  ``*_subset_size``, ``batch_size`` ...) is at most N,

each no lower than the field's own minimum (a field declared ``ge=1`` stays >= 1). Architecture
(the adapters' ``params``) is not touched: the cells build the same networks on less data.

A limited suite is another experiment, ``<name>.limit<N>`` (its own leaderboard under
``results/<name>.limit<N>/``), its cells' config hashes include ``limit: N``
(:func:`bench.plan.cell_config`) and its runs carry the tag ``bench.limit``: limited and full runs
never mix.
"""
from __future__ import annotations

import re

from bench.errors import SuiteError

#: keys whose integer values are counts of work (images, samples, steps, batches); capped at N
COUNT_KEY = re.compile(r"^(n|n_\w+|\w+_n|steps|\w+_steps|epochs|\w+_epochs|batch|batch_size|\w+_batch(_size)?|"
                       r"\w*samples|\w+_images|\w+_examples|\w+_subset_size)$")
_NAME = re.compile(r"^(?P<base>.+)\.limit(?P<n>[1-9][0-9]*)$")


def limit_of(suite_name: str) -> int | None:
    """N of a limited suite's name ``<name>.limit<N>``; None for a full suite."""
    m = _NAME.match(suite_name)
    return int(m.group("n")) if m else None


def _floor(model, key: str) -> int:
    """The smallest value field ``key`` of pydantic ``model`` admits (its ge / gt), at least 0."""
    f = getattr(model, "model_fields", {}).get(key)
    low = 0
    for c in getattr(f, "metadata", ()) or ():
        if getattr(c, "ge", None) is not None:
            low = max(low, int(c.ge))
        if getattr(c, "gt", None) is not None:
            low = max(low, int(c.gt) + 1)
    return low


def cap(values: dict, n: int, model=None) -> dict:
    """``values`` with every count (:data:`COUNT_KEY`, an int, not a bool) at most ``n``; nested dicts too."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out[k] = cap(v, n)
        elif isinstance(v, int) and not isinstance(v, bool) and COUNT_KEY.match(k):
            out[k] = min(v, max(n, _floor(model, k)))
        else:
            out[k] = v
    return out


def limited(suite, n: int):
    """A copy of ``suite`` (a checked :class:`bench.suite.Suite`) with every count capped at ``n`` (module doc)."""
    from bench import registry

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SuiteError(f"--limit must be a positive integer, got {n!r}")
    if limit_of(suite.name) is not None:
        raise SuiteError(f"{suite.source}: suite {suite.name!r} is limited already")
    methods = []
    for m in suite.methods:
        model = getattr(registry.meta("adapter", m.adapter), "Budget", None)
        budget = {**suite.budget, **m.budget}
        if model is not None:
            budget = model.model_validate(budget).model_dump(mode="json")
        methods.append(m.model_copy(update={"budget": cap(budget, n, model)}))
    metrics = []
    for spec in suite.metrics:
        model = registry.meta("metric", spec.name).Params
        params = model.model_validate(spec.params).model_dump(mode="json")
        metrics.append(spec.model_copy(update={"params": cap(params, n, model)}))
    ds = suite.dataset
    if getattr(registry.meta("dataset", ds.name), "limit_splits", True):
        # the splits keep 2N items: a metric may draw two disjoint sets of N (a real-vs-real floor)
        dataset = ds.model_copy(update={"n_train": min(ds.n_train or 2 * n, 2 * n),
                                        "n_test": min(ds.n_test or 2 * n, 2 * n)})
    else:  # its splits are not counted in items (a byte stream): the capped budgets and metric counts limit the work
        dataset = ds
    return suite.model_copy(update={
        "name": f"{suite.name}.limit{n}", "description": f"[--limit {n}: counts capped, not a result] {suite.description}",
        "methods": methods, "metrics": metrics, "dataset": dataset, "budget": {},
    })
