"""Errors the harness reports to users as one clear message (no traceback)."""


class BenchError(Exception):
    """Base class: a user-facing error whose message says what is wrong and what to do."""


class SuiteError(BenchError):
    """A suite YAML is malformed; the message names the file and the field path."""


class DatasetMissing(BenchError):
    """A data set is not on disk; the message names the path, the variable and the layout."""


class MetricError(BenchError):
    """A metric produced a non-finite value or could not be computed."""


def disk_full(e: BaseException) -> BaseException | None:
    """The exception in ``e``'s cause chain that says the disk is full (ENOSPC, or sqlite's "database or
    disk is full", however wrapped), or None."""
    import errno

    seen: BaseException | None = e
    for _ in range(10):
        if seen is None:
            return None
        if getattr(seen, "errno", None) == errno.ENOSPC or "disk is full" in str(seen) or "No space left" in str(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def free_space(where) -> str:
    """``"12.3 MB free"`` on the file system of ``where`` (its nearest existing parent), or why unknown."""
    import shutil
    from pathlib import Path

    probe = Path(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return f"{shutil.disk_usage(probe).free / 1e6:.1f} MB free on {probe}"
    except OSError:
        return "free space unknown"
