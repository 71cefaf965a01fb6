"""What an SRE sees: Prometheus metrics, drift signals and structured logs.

- ``metrics``: every ``segstream_*`` series on one injected registry (:class:`Metrics`)
- ``drift``: churn, distance, centroid shift, PSI and drift alarms (:class:`DriftMonitor`)
- ``fit_drift``: the alarm's detector, a CUSUM of the fit ratio (:class:`FitDriftDetector`)
- ``logs``: text or JSON-lines logging
- ``endpoint``: the HTTP server of ``/metrics``, ``/healthz`` and ``/readyz`` (:class:`OpsEndpoint`)
"""

from __future__ import annotations

from state.lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Metrics": "stream.observability.metrics",
    "DriftMonitor": "stream.observability.drift",
    "population_stability_index": "stream.observability.drift",
    "centroid_shift": "stream.observability.drift",
    "FitDriftDetector": "stream.observability.fit_drift",
    "configure_logging": "stream.observability.logs",
    "OpsEndpoint": "stream.observability.endpoint",
})
