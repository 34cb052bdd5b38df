"""The API benchmark's load generator, run in its own process.

``python -m bench._loadgen SPEC.json OUT.json``: ``concurrency`` coroutines, each on its own
keep-alive connection, each sending the next request of the spec's list (``[path, token or
null]``, taken in turn) as soon as its previous answer was read, for ``warmup_s`` and then
``duration_s``. The client is ``httpx.AsyncClient`` (``client: httpx``) or a minimal
HTTP/1.1 client on asyncio streams (``client: raw``: pre-encoded requests, status line and
``Content-Length`` or chunked bodies read, nothing else parsed), several times cheaper per
request, so that on a small host the load generator takes less of the CPU from the server.
Only requests started after the warm-up and answered before the end are counted. Any
status but 200 is an error (counted by status, or by exception name). Also measured over
the same window: this process's CPU time, the server's (its whole process tree) and the
host's (``/proc/stat``), so that a saturated load generator shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, linear between order statistics."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of process ``root`` and all its descendants now."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    family, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == pid and p not in family]
        family.update(kids)
        frontier.extend(kids)
    return sum(cpu.get(p, 0.0) for p in family)


def host_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, sum(values[:8]) / _TICK


def own_cpu_s() -> float:
    """CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def snapshot(server_pid: int | None) -> dict[str, float]:
    """Every CPU counter at once, with the wall clock."""
    busy, total = host_cpu()
    return {"wall": time.perf_counter(), "own": own_cpu_s(), "host_busy": busy,
            "host_total": total,
            "server": tree_cpu_s(server_pid) if server_pid else 0.0}


async def _read_answer(reader: asyncio.StreamReader) -> tuple[str, int]:
    """Read one HTTP/1.1 answer; (status, body bytes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12].decode()
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        length = int(lower[at + 17:end])
        await reader.readexactly(length)
        return status, length
    if b"\r\ntransfer-encoding: chunked" not in lower:
        raise ValueError("an answer without Content-Length and not chunked")
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        n = int(line.split(b";")[0], 16)
        await reader.readexactly(n + 2)
        size += n
        if n == 0:
            return status, size


class _Load:
    """The measured window and what was counted in it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.requests = [(path, {"Authorization": f"Bearer {token}"} if token else None)
                         for path, token in spec["requests"]]
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.bytes = 0
        self.next = 0
        self.measure_from = time.perf_counter() + float(spec["warmup_s"])
        self.measure_to = self.measure_from + float(spec["duration_s"])
        self.marks: dict[str, dict[str, float]] = {}

    def take(self) -> int:
        """The index of the next request to send."""
        self.next += 1
        return (self.next - 1) % len(self.requests)

    def record(self, t0: float, t1: float, status: str, size: int) -> None:
        """Count one answer if it lies in the window."""
        if t0 >= self.measure_from and t1 <= self.measure_to:
            self.latencies.append(t1 - t0)
            self.bytes += size
            if status != "200":
                self.errors[status] += 1

    async def mark(self) -> None:
        """Take the CPU counters at the window's start and end."""
        await asyncio.sleep(max(0.0, self.measure_from - time.perf_counter()))
        self.marks["from"] = snapshot(self.spec.get("server_pid"))
        await asyncio.sleep(max(0.0, self.measure_to - time.perf_counter()))
        self.marks["to"] = snapshot(self.spec.get("server_pid"))

    async def httpx_worker(self, client: Any) -> None:
        """One connection's loop on the shared ``httpx.AsyncClient``."""
        import httpx

        while (t0 := time.perf_counter()) < self.measure_to:
            path, headers = self.requests[self.take()]
            try:
                answer = await client.get(path, headers=headers)
                status, size = str(answer.status_code), len(answer.content)
            except httpx.HTTPError as exc:
                status, size = type(exc).__name__, 0
            self.record(t0, time.perf_counter(), status, size)

    async def raw_worker(self) -> None:
        """One connection's loop with the minimal client (reconnects after an error)."""
        host, port = self.spec["base_url"].removeprefix("http://").split(":")
        raw = [(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                + "\r\n").encode() for path, headers in self.requests]
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (t0 := time.perf_counter()) < self.measure_to:
            request = raw[self.take()]
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, int(port), limit=1 << 24)
                conn[1].write(request)
                status, size = await _read_answer(conn[0])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as exc:
                status, size = type(exc).__name__, 0
                if conn is not None:
                    conn[1].close()
                conn = None
            self.record(t0, time.perf_counter(), status, size)
        if conn is not None:
            conn[1].close()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive the load described by ``spec``; the figures of the measured window."""
    import httpx

    concurrency = int(spec["concurrency"])
    state = _Load(spec)
    if spec.get("client", "raw") == "raw":
        await asyncio.gather(state.mark(), *(state.raw_worker() for _ in range(concurrency)))
    else:
        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=spec["base_url"], limits=limits,
                                     trust_env=False,
                                     timeout=float(spec.get("timeout_s", 30))) as client:
            await asyncio.gather(state.mark(),
                                 *(state.httpx_worker(client) for _ in range(concurrency)))
    marks, latencies, errors = state.marks, state.latencies, state.errors
    window = marks["to"]["wall"] - marks["from"]["wall"]
    host_total = marks["to"]["host_total"] - marks["from"]["host_total"]
    n = len(latencies)
    return {
        "requests": n, "errors": sum(errors.values()), "errors_by_status": dict(errors),
        "seconds": round(window, 3), "rps": round(n / window, 1),
        "p50_ms": round(1000 * pct(latencies, 0.5), 2),
        "p95_ms": round(1000 * pct(latencies, 0.95), 2),
        "p99_ms": round(1000 * pct(latencies, 0.99), 2),
        "max_ms": round(1000 * max(latencies, default=float("nan")), 2),
        "mb_per_s": round(state.bytes / window / 1e6, 2),
        "bytes_per_response": round(state.bytes / n) if n else 0,
        "concurrency": concurrency, "client": spec.get("client", "raw"),
        # CPU cores kept busy over the window (1.0 = one core all the time).
        "loadgen_cores": round((marks["to"]["own"] - marks["from"]["own"]) / window, 2),
        "server_cores": round((marks["to"]["server"] - marks["from"]["server"]) / window, 2),
        "host_busy_share": round((marks["to"]["host_busy"] - marks["from"]["host_busy"])
                                 / host_total, 3) if host_total else None,
    }


def main() -> int:
    """Read the spec, run, write the figures."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(spec))
    Path(sys.argv[2]).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
