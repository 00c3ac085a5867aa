"""The code a cell ran: a fingerprint of its adapter's source, recorded beside (not inside) the config hash.

A cell's config hash (:mod:`bench.plan`) says *what* was asked; its code fingerprint says *which code*
answered. The fingerprint covers the adapter class's qualified name, the sha256 of the source of
every module that defines it or one of its adapter base classes (in-tree ``adapters/`` or a plugin;
the harness's own ``bench`` package is covered by ``HARNESS_VERSION`` and the git SHA tag), the
modules a class lists in ``code_modules`` (e.g. vq's tokenizer network and AR prior), and the
installed version of the distribution that ships a plugin module.

It is kept out of the config hash on purpose: editing a docstring must not orphan every finished run
and the committed gate baselines. Instead the runner records it as tags (``bench.code.*``) and
checks it when it would reuse a FINISHED run: a different fingerprint is refused loudly
(``code changed since this run``) unless ``--force`` (run again) or ``--accept-code-change``
(keep the old numbers, recorded on the run). Cached weights carry the fingerprint of the code that
trained them and are retrained when it differs (:func:`stale_weights`).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import sys
from dataclasses import dataclass
from functools import lru_cache

from bench.context import stable_hash

TAG = "bench.code."
FINGERPRINT_TAG = f"{TAG}fingerprint"
ACCEPTED_TAG = f"{TAG}accepted"
"""Fingerprints a user accepted for a FINISHED run (``--accept-code-change``), comma-separated."""


@lru_cache(maxsize=None)
def _dist_of(top: str) -> tuple[str, str] | None:
    """(distribution, version) that installs top-level package ``top``, or None (not installed as one)."""
    names = importlib.metadata.packages_distributions().get(top) or []
    for n in names:
        try:
            return n, importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def module_source_sha(module: str) -> str:
    """sha256 of a module's source file (``"unknown"`` when it has none, e.g. a built-in)."""
    mod = sys.modules.get(module)
    if mod is None:
        import importlib

        mod = importlib.import_module(module)
    try:
        path = inspect.getsourcefile(mod) or getattr(mod, "__file__", None)
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (TypeError, OSError):
        return "unknown"


def _is_harness(module: str) -> bool:
    return module == "bench" or module.startswith("bench.") or module == "builtins"


def is_plugin(module: str) -> bool:
    """Whether ``module`` is outside the repository's own packages (``bench``, ``adapters``)."""
    return not (_is_harness(module) or module == "adapters" or module.startswith("adapters."))


@dataclass(frozen=True)
class CodeIdentity:
    """What :func:`identity` found: the class, each covered module's source sha256, plugin versions."""

    cls: str  # "module:Qualname"
    modules: dict[str, str]  # module -> sha256 of its source
    plugins: dict[str, str]  # plugin module -> "distribution==version" (or "not installed")

    @property
    def fingerprint(self) -> str:
        return stable_hash({"class": self.cls, "modules": self.modules, "plugins": self.plugins})

    def tags(self) -> dict[str, str]:
        """The run tags: ``bench.code.{fingerprint,class}``, one ``bench.code.module.<m>`` per module
        (its sha256, first 16 hex digits) and ``bench.code.plugin.<m>`` per plugin module."""
        out = {FINGERPRINT_TAG: self.fingerprint, f"{TAG}class": self.cls}
        out.update({f"{TAG}module.{m}": sha[:16] for m, sha in self.modules.items()})
        out.update({f"{TAG}plugin.{m}": v for m, v in self.plugins.items()})
        return out


def identity(cls: type) -> CodeIdentity:
    """The code identity of adapter class ``cls`` (see the module docstring)."""
    modules: dict[str, str] = {}
    names: list[str] = []
    for base in cls.__mro__:
        if _is_harness(base.__module__):
            continue
        names.append(base.__module__)
        names += list(base.__dict__.get("code_modules", ()))
    for m in dict.fromkeys(names):
        modules[m] = module_source_sha(m)
    plugins = {}
    for m in modules:
        if is_plugin(m):
            dist = _dist_of(m.split(".")[0])
            plugins[m] = f"{dist[0]}=={dist[1]}" if dist else "not installed (on sys.path)"
    return CodeIdentity(f"{cls.__module__}:{cls.__qualname__}", dict(sorted(modules.items())), plugins)


def changed_modules(old_tags: dict[str, str], new: CodeIdentity) -> list[str]:
    """The modules (and plugin versions, and the class) that differ between a run's tags and ``new``."""
    out = []
    if old_tags.get(f"{TAG}class", new.cls) != new.cls:
        out.append(f"class {old_tags.get(f'{TAG}class')} -> {new.cls}")
    for k, v in new.tags().items():
        if k.startswith((f"{TAG}module.", f"{TAG}plugin.")) and old_tags.get(k) != v:
            out.append(k.removeprefix(TAG).split(".", 1)[1] + (f" ({old_tags.get(k)} -> {v})" if k.startswith(
                f"{TAG}plugin.") else ""))
    for k in old_tags:
        if k.startswith(f"{TAG}module.") and k not in new.tags():
            out.append(k.removeprefix(f"{TAG}module."))
    return out


def run_matches(tags: dict[str, str], new: CodeIdentity) -> bool | None:
    """Whether a run's recorded code is ``new`` (or was accepted as it); None when it recorded none."""
    old = tags.get(FINGERPRINT_TAG)
    if old is None:
        return None
    return old == new.fingerprint or new.fingerprint in tags.get(ACCEPTED_TAG, "").split(",")


def refusal(method: str, seed: int, run_id: str, tags: dict[str, str], new: CodeIdentity) -> str:
    what = ", ".join(changed_modules(tags, new)) or "fingerprint"
    return (f"{method} seed={seed}: code changed since this run ({run_id[:8]}): {new.cls}; {what}; "
            "rerun with --force (new numbers) or --accept-code-change (keep the old ones)")


# -- cached weights ----------------------------------------------------------------------------
CACHE_FIELD = "code_fingerprint"


def stale_weights(cached: dict, cls: type, what: str) -> bool:
    """Whether ``cached`` (a cache entry's dict) was trained by other code than ``cls``'s today.

    An entry written before fingerprints were recorded is trusted. A stale one is named on stderr.
    """
    old = cached.get(CACHE_FIELD) if isinstance(cached, dict) else None
    if old is None:
        return False
    new = identity(cls)
    if old == new.fingerprint:
        return False
    print(f"[bench] cached {what} was trained by other code than today's {new.cls} "
          f"(fingerprint {old} -> {new.fingerprint}): training it again", file=sys.stderr, flush=True)
    return True
