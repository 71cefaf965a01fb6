"""What an SRE sees: Prometheus metrics, drift signals and structured logs.

- ``metrics``: every ``segstream_*`` series on one injected registry (:class:`Metrics`)
- ``drift``: churn, distance, centroid shift, PSI and Page-Hinkley alarms (:class:`DriftMonitor`)
- ``logs``: text or JSON-lines logging
- ``endpoint``: the HTTP server of ``/metrics``, ``/healthz`` and ``/readyz`` (:class:`OpsEndpoint`)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Metrics": "stream.observability.metrics",
    "DriftMonitor": "stream.observability.drift",
    "population_stability_index": "stream.observability.drift",
    "centroid_shift": "stream.observability.drift",
    "configure_logging": "stream.observability.logs",
    "OpsEndpoint": "stream.observability.endpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    # Lazy, so that importing one module of the package does not import all of them.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
