"""Load test of the CDS Hooks service with ``wrk``: server CPU per call, requests per second and latency.

    .venv/bin/python benchmarks/cds_wrk.py                      # workers 1 and 2, 10 and 50 connections
    .venv/bin/python benchmarks/cds_wrk.py --duration 5 --connections 10 --workers 1
    .venv/bin/python benchmarks/cds_wrk.py --replay-store memory redis   # also with a shared Redis

For each worker count it starts ``b12screen serve`` on 127.0.0.1 with JWT verification on (an ES384 key
generated here and trusted inline), then runs ``wrk`` (Debian package ``wrk``) against ``GET /health`` and
against ``patient-view`` with the synthetic full prefetch of ``cds_load.py`` (10 keys, about 20 resources).
Every patient-view request carries its own pre-signed JWT (unique ``jti``, ``aud`` = the endpoint), taken
in turn from a file by a Lua script: the service refuses a replayed ``jti``, so the script signs enough
tokens for the whole run and a request past the last token is sent without one (it then counts as an
error, never as a success). Server CPU per call is the utime + stime of the server's process tree
(supervisor and every worker, from ``/proc/<pid>/stat``) over the phase, divided by the requests wrk
completed. Prints per phase: requests, req/s, p50/p95/p99, errors (non-2xx and socket errors), server CPU
per call; then CPU patient-view / CPU ``/health``, req/s 2 workers / 1 worker, how connections and CPU
spread over the workers, and the CPU of one ES384 signature check in this process (the service's own check,
a floor of every call) against the first ``/health`` phase. The load generator shares the machine's cores
with the server. With ``--replay-store redis`` it also starts ``redis-server`` on a free loopback port as the
service's replay store and reports Redis's own CPU per call beside the service's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jwt
from cds_load import ISS, KID, PATH, free_port, request_bodies, start_server, stop_server
from cryptography.hazmat.primitives.asymmetric import ec

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: the Lua ``done()`` shared by both scripts: one JSON line with wrk's own counts and percentiles
LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '@@WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""

#: patient-view: each wrk thread takes every n-th token (no two requests share one) and a body in turn
LUA_SERVICE = r"""
local threads = {}
setup = function(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

init = function(args)
  local tokens_file, bodies_file, first, count, nthreads = args[1], args[2], tonumber(args[3]), tonumber(args[4]),
    tonumber(args[5])
  tokens = {}
  local n = 0
  for line in io.lines(tokens_file) do
    if n >= first and n < first + count and (n - first) % nthreads == id then table.insert(tokens, line) end
    n = n + 1
  end
  prefixes, suffixes = {}, {}
  local odd = true
  for line in io.lines(bodies_file) do
    if odd then table.insert(prefixes, line) else table.insert(suffixes, line) end
    odd = not odd
  end
  used, exhausted = 0, 0
end

request = function()
  used = used + 1
  local headers = {["Content-Type"] = "application/json"}
  if used <= #tokens then
    headers["Authorization"] = "Bearer " .. tokens[used]
  else
    exhausted = exhausted + 1  -- no token left: sent without one, so it fails (401) and is counted
  end
  local k = (used - 1) % #prefixes + 1
  local body = prefixes[k] .. string.format("%d-%d", id, used) .. suffixes[k]
  return wrk.format("POST", nil, headers, body)
end
"""


@dataclass
class Phase:
    workers: int
    endpoint: str
    connections: int
    planned: float = 10.0
    requests: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0
    per_worker_cpu: list[float] = field(default_factory=list)
    per_worker_connections: list[int] = field(default_factory=list)
    store: str = "memory"
    store_cpu_s: float = 0.0  # redis-server's CPU over the phase (0 with the memory store)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        return self.cpu_s * 1000 / self.requests if self.requests else float("nan")

    @property
    def store_cpu_ms_per_call(self) -> float:
        return self.store_cpu_s * 1000 / self.requests if self.requests else float("nan")


# -- the server's process tree ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of ``pid``, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cpu(pid: int | None) -> float:
    """CPU seconds of one process (0 for None or a process that is gone)."""
    stat = _stat(pid) if pid else None
    return stat[1] if stat else 0.0


def process_tree(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and all its descendants, by pid."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p))) is not None}
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return {pid: stats[pid][1] for pid in tree if pid in stats}


def _listening_inodes(port: int) -> set[str]:
    return tcp_inodes(port, "0A")


def tcp_inodes(port: int, state: str) -> set[str]:
    """Socket inodes of TCP sockets with local ``port`` in ``state`` (01 established, 0A listening)."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == state:
                out.add(cols[9])
    return out


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets ``pid`` holds (an fd closing while it is read is passed over)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def connections_by_pid(pids: list[int], port: int) -> list[int]:
    """Established server-side connections on ``port`` held by each pid."""
    established = tcp_inodes(port, "01")
    return [len(socket_inodes(pid) & established) for pid in pids]


def workers_of(root: int, port: int) -> list[int]:
    """The pids that serve connections: those holding a listening socket on ``port`` (the workers;
    the supervisor too when it is the only process)."""
    listening = _listening_inodes(port)
    out = [pid for pid in sorted(process_tree(root)) if socket_inodes(pid) & listening]
    children = [pid for pid in out if pid != root]
    return children or out


# -- wrk ----------------------------------------------------------------------------------------------------


def run_wrk(url: str, connections: int, seconds: float, script: Path, args: list[str], threads: int) -> dict[str, Any]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(script), url, "--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("@@WRK "):
            return json.loads(line[6:])
    raise RuntimeError(f"wrk gave no summary (exit {done.returncode}): {done.stderr.strip()[:300]}")


def measure(phase: Phase, root: int, port: int, url: str, script: Path, args: list[str], threads: int,
            store_pid: int | None = None) -> Phase:
    pids = workers_of(root, port)
    sample: list[list[int]] = []
    timer = threading.Timer(max(0.5, phase.planned / 2), lambda: sample.append(connections_by_pid(pids, port)))
    store_before = _cpu(store_pid)
    before = process_tree(root)
    timer.start()
    result = run_wrk(url, phase.connections, phase.planned, script, args, threads)
    timer.cancel()
    after = process_tree(root)
    phase.store_cpu_s = _cpu(store_pid) - store_before
    phase.requests = result["requests"]
    phase.seconds = result["duration_us"] / 1e6
    phase.p50_ms, phase.p95_ms, phase.p99_ms = (result[k] / 1000 for k in ("p50_us", "p95_us", "p99_us"))
    phase.errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    phase.cpu_s = sum(after.get(pid, 0.0) - before.get(pid, 0.0) for pid in after)
    phase.per_worker_cpu = [after.get(pid, 0.0) - before.get(pid, 0.0) for pid in pids]
    phase.per_worker_connections = sample[0] if sample else []
    return phase


def sign_tokens(key: ec.EllipticCurvePrivateKey, audience: str, count: int, path: Path) -> None:
    """``count`` ES384 JWTs for ``audience``, each with its own ``jti``, one per line."""
    now = int(time.time())
    with path.open("w") as fh:
        for _ in range(count):
            fh.write(jwt.encode({"iss": ISS, "aud": audience, "iat": now, "exp": now + 3000, "jti": uuid.uuid4().hex},
                                key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"}) + "\n")


def signature_cpu_ms(key: ec.EllipticCurvePrivateKey, tokens_file: Path, count: int = 300) -> float:
    """CPU per ES384 signature check in this process, with the service's own check (the floor of a call)."""
    from jwt.algorithms import ECAlgorithm

    from b12screen.cdshooks import tokens

    token = tokens.parse(tokens_file.read_text().split("\n", 1)[0])
    public = ECAlgorithm(ECAlgorithm.SHA384).prepare_key(key.public_key())
    tokens.check_signature(token, "ES384", public)
    start = time.process_time()
    for _ in range(count):
        tokens.check_signature(token, "ES384", public)
    return (time.process_time() - start) * 1000 / count


@contextmanager
def replay_store(kind: str) -> Iterator[tuple[str, int | None]]:
    """The ``replay_store`` setting and the pid of its server: ``memory``, or a ``redis-server`` started on
    a free loopback port (no persistence) and stopped afterwards."""
    if kind == "memory":
        yield "memory", None
        return
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if redis.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", redis.pid
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def run_server(workers: int, args: argparse.Namespace, key: ec.EllipticCurvePrivateKey, folder: Path,
               bodies_file: Path, store: str = "memory") -> list[Phase]:
    with replay_store(store) as (setting, store_pid):
        return _run_server(workers, args, key, folder, bodies_file, store, setting, store_pid)


def _run_server(workers: int, args: argparse.Namespace, key: ec.EllipticCurvePrivateKey, folder: Path,
                bodies_file: Path, store: str, setting: str, store_pid: int | None) -> list[Phase]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service_phases = [(args.warmup, 10)] + [(args.duration, c) for c in args.connections]
    tokens_needed = [int(seconds * args.tokens_per_second) + args.spare_tokens for seconds, _ in service_phases]
    tokens_file = folder / f"tokens-{workers}.txt"
    sign_tokens(key, base + PATH, sum(tokens_needed), tokens_file)
    service_script, health_script = folder / "service.lua", folder / "health.lua"
    service_script.write_text(LUA_SERVICE + LUA_DONE)
    health_script.write_text(LUA_DONE)
    process = start_server(port, True, workers, key, folder, args.validate, replay_store=setting)
    phases = []
    try:
        first = 0
        for n, ((seconds, connections), count) in enumerate(zip(service_phases, tokens_needed, strict=True)):
            lua_args = [str(tokens_file), str(bodies_file), str(first), str(count), str(args.threads)]
            first += count
            if n == 0:  # warm-up: model classes, caches, all workers started
                run_wrk(base + PATH, connections, seconds, service_script, lua_args, args.threads)
                for c in args.connections:
                    health = Phase(workers, "GET /health", c, args.duration, store=store)
                    phases.append(measure(health, process.pid, port, base + "/health", health_script, [],
                                          args.threads, store_pid))
                continue
            service = Phase(workers, "patient-view", connections, seconds, store=store)
            phases.append(measure(service, process.pid, port, base + PATH, service_script, lua_args, args.threads,
                                  store_pid))
    finally:
        stop_server(process)
    return phases


def report(phases: list[Phase], args: argparse.Namespace) -> dict[str, Any]:
    by = {(p.store, p.workers, p.endpoint, p.connections): p for p in phases}
    ratios: dict[str, Any] = {}
    for p in phases:
        if p.endpoint != "patient-view":
            continue
        suffix = "" if p.store == "memory" else f"_{p.store}"
        health = by.get((p.store, p.workers, "GET /health", p.connections))
        if health and health.requests:
            ratios[f"cpu_pv_over_health_w{p.workers}_c{p.connections}{suffix}"] = (
                p.cpu_ms_per_call / health.cpu_ms_per_call)
        one = by.get((p.store, 1, "patient-view", p.connections))
        if p.workers > 1 and one and one.rps:
            ratios[f"rps_w{p.workers}_over_w1_c{p.connections}{suffix}"] = p.rps / one.rps
    return ratios


def print_table(phases: list[Phase], ratios: dict[str, Any]) -> None:
    print(f"{'store':<6} {'workers':>7} {'endpoint':<13} {'conns':>5} {'requests':>8} {'req/s':>8} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'p99 ms':>7} {'errors':>6} {'CPU ms/call':>11} {'Redis ms/call':>13}  "
          "spread (connections / CPU s per worker)")
    for p in phases:
        spread = ", ".join(f"{c} / {s:.1f}" for c, s in zip(p.per_worker_connections or [0] * len(p.per_worker_cpu),
                                                              p.per_worker_cpu, strict=False))
        print(f"{p.store:<6} {p.workers:>7} {p.endpoint:<13} {p.connections:>5} {p.requests:>8} {p.rps:>8.1f} "
              f"{p.p50_ms:>7.1f} {p.p95_ms:>7.1f} {p.p99_ms:>7.1f} {p.errors:>6} {p.cpu_ms_per_call:>11.3f} "
              f"{p.store_cpu_ms_per_call:>13.3f}  {spread}")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Worker counts (default 1 2).")
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 50],
                        help="Connection counts (default 10 50).")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per phase (default 10).")
    parser.add_argument("--warmup", type=float, default=2.0, help="Warm-up seconds of patient-view (default 2).")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: a light generator).")
    parser.add_argument("--patients", type=int, default=50, help="Distinct synthetic patients (default 50).")
    parser.add_argument("--tokens-per-second", type=int, default=1500,
                        help="Pre-signed JWTs per second of patient-view phase (default 1500).")
    parser.add_argument("--spare-tokens", type=int, default=100,
                        help="Pre-signed JWTs per phase beyond --tokens-per-second (default 100).")
    parser.add_argument("--validate", choices=("evidence", "all"), default="evidence",
                        help="The service's validation policy (default evidence).")
    parser.add_argument("--replay-store", choices=("memory", "redis"), nargs="+", default=["memory"],
                        help="The service's replay store(s), each a run of its own (default memory).")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    if "redis" in args.replay_store and shutil.which("redis-server") is None:
        parser.error("redis-server is not installed (Debian: apt-get install redis-server)")
    if min(args.workers + args.connections) < 1 or args.duration < 1 or args.threads < 1:
        parser.error("workers, connections, threads and duration must be at least 1")
    if any(c % args.threads for c in args.connections):
        parser.error("each connection count must be a multiple of --threads (wrk gives each thread c/t)")
    key = ec.generate_private_key(ec.SECP384R1())
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        bodies_file = folder / "bodies.txt"
        bodies_file.write_bytes(b"".join(prefix + b"\n" + suffix + b"\n"
                                         for prefix, suffix in request_bodies(args.patients)))
        for store in args.replay_store:
            for workers in args.workers:
                phases += run_server(workers, args, key, folder, bodies_file, store)
        verify_ms = signature_cpu_ms(key, folder / f"tokens-{args.workers[0]}.txt")
    ratios = report(phases, args)
    health = next((p for p in phases if p.endpoint == "GET /health"), None)
    if health and health.requests:
        ratios["es384_verify_over_health"] = verify_ms / health.cpu_ms_per_call
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "duration_s": args.duration, "ratios": ratios,
                          "es384_verify_ms": verify_ms,
                          "phases": [{**p.__dict__, "rps": p.rps, "cpu_ms_per_call": p.cpu_ms_per_call,
                                      "store_cpu_ms_per_call": p.store_cpu_ms_per_call}
                                     for p in phases]}))
    else:
        print(f"{os.cpu_count()} CPU(s), {args.duration:g} s per phase, JWT verification on (ES384), "
              f"validation policy {args.validate}, wrk with {args.threads} thread(s) on the same machine")
        print_table(phases, ratios)
        print(f"ES384 signature check (in process, the service's own code): {verify_ms:.3f} ms CPU a call")
    return 0 if all(p.errors == 0 for p in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
