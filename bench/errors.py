"""Errors the harness reports to users as one clear message (no traceback)."""


class BenchError(Exception):
    """Base class: a user-facing error whose message says what is wrong and what to do."""


class SuiteError(BenchError):
    """A suite YAML is malformed; the message names the file and the field path."""


class DatasetMissing(BenchError):
    """A data set is not on disk; the message names the path, the variable and the layout."""


class MetricError(BenchError):
    """A metric produced a non-finite value or could not be computed."""
