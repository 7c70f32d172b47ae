"""Ray's metrics API, one instance a metric a process: Ray exports what every process records
at its node's metrics port, prefixed ``ray_`` (counters also suffixed ``_total``)."""

from __future__ import annotations

from typing import Any

_made: dict[str, Any] = {}


def ray_metric(kind: str, name: str, description: str, tags: tuple[str, ...], **options: Any) -> Any:
    """The ``kind`` ("Counter", "Gauge", "Histogram") metric ``name``, made on first use."""
    if name not in _made:
        from ray.util import metrics

        _made[name] = getattr(metrics, kind)(name, description, tag_keys=tags, **options)
    return _made[name]
