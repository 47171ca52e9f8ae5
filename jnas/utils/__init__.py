"""Small run-time helpers: metrics files, atomic JSON writes, progress output.

``progress`` is deliberately not re-exported here: binding the function to
``jnas.utils.progress`` would shadow the submodule of the same name. Import it
as ``from jnas.utils.progress import progress``.

Example:
    >>> from jnas.utils import MetricWriter, read_metrics, write_json_atomic
    >>> from jnas.utils.progress import progress
"""

from jnas.utils.metrics import MetricWriter, read_metrics, write_json_atomic

__all__ = ["MetricWriter", "read_metrics", "write_json_atomic"]
