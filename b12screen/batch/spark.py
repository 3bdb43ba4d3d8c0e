"""The Spark engine: the same stream and evaluation functions, distributed by Apache Spark (pyspark).

Units of work become an RDD; each executor streams its units into partial facts, which are grouped by
patient id (``Patient/x`` and ``urn:uuid:x`` together), screened with a Screener rebuilt in each executor
from the profile and configuration (plugins come from installed entry points), and collected on the
driver in patient order. Executors read the input paths themselves: on a cluster they must be on a
shared filesystem mounted at the same path.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.config import Config
from ..errors import B12ScreenError
from ..screening import Screener
from ..sources.validation import extractor_for
from .evaluate import EvalContext, PatientOutput, bare_id, evaluate_partials
from .progress import Progress
from .scan import Unit, dearest_first
from .stream import Partial, Pos, StreamContext, UnitOutput, UnitSummary, stream_unit
from .workdir import hold_point

_SCREENERS: dict[Any, Screener] = {}
ABORT_SECONDS = 10.0  # at most, for cancelled jobs to end


@dataclass(frozen=True)
class ScreenerSpec:
    """What an executor rebuilds its Screener from."""

    profile: str = "default"
    config: Config | None = None
    strict: bool = False

    def build(self) -> Screener:
        key = (self.profile, repr(self.config.fingerprint() if self.config else None), self.strict)
        screener = _SCREENERS.get(key)
        if screener is None:
            from ..plugins import get_plugin_manager

            screener = Screener(profile=self.profile, config=self.config,
                                plugin_manager=get_plugin_manager(strict=self.strict or None))
            _SCREENERS[key] = screener
        return screener


def _stream(spec: ScreenerSpec, shared: Any, unit: Unit) -> UnitOutput:
    pool, deleted, max_line, policy = shared.value
    ctx = StreamContext(extractor_for(spec.build().terminology, policy), pool, deleted, max_line)
    return stream_unit(ctx, unit)


def _summary(out: UnitOutput) -> UnitSummary:
    return out.summary(carry_errors=True)


def _evaluate(spec: ScreenerSpec, shared: Any, group: tuple[str, Any]) -> list[PatientOutput]:
    as_of, files, pool, bases, policy = shared.value
    ctx = EvalContext(spec.build(), as_of, files, pool, bases, policy)
    hold_point("screen")
    partials: dict[str, list[Partial]] = {}
    for key, partial in group[1]:
        partials.setdefault(key, []).append(partial)
    return evaluate_partials(ctx, partials)


class SparkSetupError(B12ScreenError):
    """Spark cannot start: an unreachable master or missing cluster configuration (one clear line)."""


LOOPBACK = "127.0.0.1"
_LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\])?$")


def is_local_master(master: str) -> bool:
    """``local``, ``local[4]``, ``local[*]``, ``local[4,2]``: Spark inside this process's JVM."""
    return bool(_LOCAL_MASTER.match(master.strip()))


def session_conf(master: str, conf: Mapping[str, str]) -> dict[str, str]:
    """The Spark settings of a session: a local master binds the driver to 127.0.0.1 (host and bind
    address) unless the user configured otherwise."""
    out = dict(conf)
    if is_local_master(master):
        out.setdefault("spark.driver.host", LOOPBACK)
        out.setdefault("spark.driver.bindAddress", LOOPBACK)
    return out


def master_problem(master: str, environ: Mapping[str, str], timeout: float = 5.0) -> str | None:
    """Why Spark could not start on ``master`` (checked before the JVM starts), or None."""
    master = master.strip()
    if is_local_master(master):
        return None
    if master == "yarn":
        if not (environ.get("HADOOP_CONF_DIR") or environ.get("YARN_CONF_DIR")):
            return "the yarn master needs HADOOP_CONF_DIR or YARN_CONF_DIR (the cluster's configuration folder)"
        return None
    if master.startswith("spark://"):
        for hostport in master[len("spark://"):].split(","):
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit():
                return f"Spark master {master!r} is not spark://HOST:PORT"
            try:
                socket.create_connection((host, int(port)), timeout=timeout).close()
                return None
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
        return f"cannot reach the Spark master {master} ({reason})"
    return None


def spark_session(master: str, conf: Mapping[str, str]) -> Any:
    """A SparkSession on ``master`` whose Python workers run this interpreter; :class:`SparkSetupError`
    when the master cannot be used."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("the spark engine needs pyspark: pip install 'b12screen[spark]'") from exc
    problem = master_problem(master, os.environ)
    if problem:
        raise SparkSetupError(problem)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("b12screen batch")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.pyspark.python", sys.executable))
    for key, value in session_conf(master, conf).items():
        builder = builder.config(key, value)
    main = threading.current_thread() is threading.main_thread()
    on_sigint = signal.getsignal(signal.SIGINT) if main else None
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # Py4J/Java errors: one line, not the JVM's traceback
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SparkSetupError(f"Spark could not start on {master} ({first})") from None
    finally:
        if on_sigint is not None:  # pyspark sets its own, which calls the JVM from inside a call to it
            signal.signal(signal.SIGINT, on_sigint)
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkEngine:
    """The engine interface of :mod:`b12screen.batch.runner` on Spark."""

    def __init__(self, options: Any, partitions: int, progress: Progress) -> None:
        raw = options.screener_spec or {}
        self.spec = raw if isinstance(raw, ScreenerSpec) else ScreenerSpec(**raw)
        self.session = spark_session(options.spark_master or "local[*]", dict(options.spark_conf))
        self.sc = self.session.sparkContext
        self.partitions = partitions
        self.progress = progress
        self.max_line = options.max_line_bytes
        self.policy = options.validate
        self.errors: dict[int, list[tuple[Pos, str]]] = {}
        self.results: Any = None
        self.broadcasts: list[Any] = []

    def _broadcast(self, value: Any) -> Any:
        handle = self.sc.broadcast(value)
        self.broadcasts.append(handle)
        return handle

    def stream(self, ctx: StreamContext, units: Sequence[Unit]) -> list[UnitSummary]:
        from pyspark import StorageLevel

        if not units:
            return []
        spec, shared = self.spec, self._broadcast((dict(ctx.pool), ctx.deleted, ctx.max_line, self.policy))
        rdd = self.sc.parallelize(dearest_first(units), len(units))  # tasks start in this order
        self.results = rdd.map(lambda unit: _stream(spec, shared, unit)).persist(StorageLevel.MEMORY_AND_DISK)
        summaries = sorted(self.results.map(_summary).collect(), key=lambda s: s.unit)
        for summary in summaries:
            self.errors[summary.unit] = summary.errors
            self.progress.read(summary.bytes, summary.resources)
        return summaries

    def unit_errors(self, unit: int) -> list[tuple[Pos, str]]:
        return self.errors.get(unit, [])

    def evaluate(self, ctx: EvalContext) -> Iterator[PatientOutput]:
        if self.results is None:
            return iter(())
        spec = self.spec
        shared = self._broadcast((ctx.as_of, list(ctx.files), dict(ctx.pool), dict(ctx.line_bases), ctx.policy))
        self.progress.screening(0)  # patients are counted as they are written
        outputs = (
            self.results.flatMap(lambda out: [(bare_id(k), (k, p)) for k, p in out.partials.items()])
            .groupByKey(self.partitions)
            .flatMap(lambda group: _evaluate(spec, shared, group))
            .sortBy(lambda o: o.key, numPartitions=self.partitions)
        )
        return outputs.toLocalIterator()

    def abort(self) -> None:
        """Cancel the running jobs (an interruption) and let them end before :meth:`close` stops the
        session; quietly: the tasks' errors about it are expected."""
        self.sc.setLogLevel("OFF")
        self.sc.cancelAllJobs()
        tracker, deadline = self.sc.statusTracker(), time.monotonic() + ABORT_SECONDS
        while tracker.getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        if self.results is not None:
            self.results.unpersist()
        for handle in self.broadcasts:
            handle.unpersist()
        self.session.stop()
