"""The ``/metrics`` exposition of Kairos's metrics (:mod:`stream.metrics`), and a process's part in it.

Multi-process mode: when several worker *processes* share one scrape port, start them with
``PROMETHEUS_MULTIPROC_DIR`` pointing at an empty directory (set before Python starts, because
prometheus-client picks its value store at import). Counters and histograms are then summed across
processes by ``stream.web``; every gauge in :mod:`stream.metrics` declares how its per-process values
combine (``multiprocess_mode``). With one process per container (docker-compose replicas), leave it
unset and let Prometheus scrape each container: ``docs/operations.md`` explains the choice.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from stream.metrics import WORKER_UP


def multiprocess_enabled() -> bool:
    """Whether prometheus-client runs in multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` is set)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def render_latest() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` and its content type.

    In multi-process mode it merges the per-process files of ``PROMETHEUS_MULTIPROC_DIR``; otherwise it
    renders this process's default registry.
    """
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


def worker_started() -> None:
    """Mark this process as up (``kairos_worker_up``)."""
    WORKER_UP.set(1)


def worker_stopped() -> None:
    """Mark this process as down; in multi-process mode also drop its live gauges."""
    WORKER_UP.set(0)
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())
