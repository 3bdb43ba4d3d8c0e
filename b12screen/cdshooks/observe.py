"""Observability of the CDS Hooks service: JSON log lines and Prometheus metrics.

Log lines and metric labels carry no patient data and no tokens: services, statuses, counts, durations,
the ``iss`` of the caller and normalised rejection reasons only.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve --workers N`` sets a fresh one per run), every worker writes
its counts to files there and ``/metrics`` adds them up, so any worker answers a scrape with the same
totals; only the process memory gauge stays per worker (a ``pid`` label).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import sys
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: the ``extra`` key under which the access log hands its fields to :class:`JsonFormatter`
FIELDS = "b12_fields"
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``event`` and any fields."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        line: dict[str, Any] = {"ts": when, "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line["event"] = fields.get("event", record.getMessage())
            line.update({k: v for k, v in fields.items() if k != "event"})
        else:
            line["event"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__  # the type only: never a trace with data in it
        return json.dumps(line, separators=(",", ":"))


def use_log_format(log_format: str) -> None:
    """Make the root logger write ``text`` or ``json`` lines on stderr (installing a handler when none)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        root.setLevel(logging.WARNING)
    if log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())


def rejection_reason(reason: str) -> str:
    """A JWT rejection reason with quoted, caller-chosen parts removed (bounded label values)."""
    return _QUOTED.sub("…", reason)[:60]


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("b12screen_cds_requests_total", "CDS Hooks requests answered",
                                ("service", "status"), registry=self.registry)
        self.latency = Histogram("b12screen_cds_request_seconds", "Time to answer a CDS Hooks request",
                                 ("service",), registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.cards = Counter("b12screen_cds_cards_total", "Hook calls by outcome (card or none)",
                             ("service", "outcome"), registry=self.registry)
        self.fetches = Counter("b12screen_cds_fallback_fetches_total",
                               "Prefetch keys fetched from the FHIR server", ("service",), registry=self.registry)
        self.jwt_rejections = Counter("b12screen_cds_jwt_rejections_total", "JWTs rejected, by reason",
                                      ("reason",), registry=self.registry)
        self.memory = Gauge("b12screen_process_resident_memory_bytes", "Resident memory of this worker process",
                            registry=self.registry, multiprocess_mode="liveall")
        self.shared_dir = os.environ.get(MULTIPROC_ENV) or None

        # Each labelled child once looked up (labels are bounded: services, statuses, two outcomes); a child
        # is made only when first used, so /metrics shows the same series as before.
        self._answered: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._carded: dict[tuple[str, bool], Any] = {}

    def observe(self, service: str, status: int, seconds: float, cards: int | None, fetched: int) -> None:
        answered = self._answered.get((service, status))
        if answered is None:
            answered = self._answered[(service, status)] = (
                self.requests.labels(service, str(status)), self.latency.labels(service))
        answered[0].inc()
        answered[1].observe(seconds)
        if cards is not None:
            carded = self._carded.get((service, bool(cards)))
            if carded is None:
                carded = self._carded[(service, bool(cards))] = self.cards.labels(service, "card" if cards else "none")
            carded.inc()
        if fetched:
            self.fetches.labels(service).inc(fetched)

    def sample_memory(self) -> None:
        """Record this process's resident memory (the ``liveall`` gauge: one series per live worker)."""
        self.memory.set(resident_bytes())

    def exposition(self) -> tuple[bytes, str]:
        """The text format: this process's registry, or with a shared directory every worker's, added up."""
        self.sample_memory()
        if self.shared_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.shared_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def resident_bytes() -> int:
    """Resident set size now (``/proc/self/statm``), else the peak (``getrusage``) where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def sample_memory(metrics: Metrics, every: float = 5.0) -> None:
    """Keep this worker's memory gauge fresh, whichever worker answers the scrapes (runs until cancelled)."""
    while True:
        metrics.sample_memory()
        await asyncio.sleep(every)
