"""Load generators over loopback.

* :func:`closed_loop`: ``wrk`` (one thread, ``c`` keep-alive connections, each sending
  its next request when the previous answer arrives). A Lua script posts the body (W5:
  cycles through ten bodies, 10% of them take the expensive branch) and prints wrk's
  summary as JSON, so nothing is scraped from wrk's text.
* :func:`open_loop` (:func:`open_loop_async` on a running loop): a fixed-rate client
  (wrk2 is not packaged for Debian): request ``i`` is due at ``t0 + i / rate`` whatever
  happened before, and its latency is measured from that intended send time, so a stall
  shows up in the latency of every request it delayed (no coordinated omission). asyncio
  (uvloop) over raw keep-alive sockets; a new connection is opened when all are busy, up
  to ``max_connections``. Latencies are also given per status, from the intended send
  time and from the actual write (``service_ms_by_status``: the server's answer time,
  the client's own lag left out).
* :class:`Connection`: one keep-alive HTTP/1.1 connection, used by the open loop and by
  the fault scenarios (``bench/faults.py``).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

_WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""


class LoadError(RuntimeError):
    """The load generator could not run or its output could not be read."""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_script(bodies: list[bytes]) -> str:
    """The Lua script for ``bodies`` (one: a fixed body; several: cycled per request)."""
    head = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    if len(bodies) == 1:
        head += f"wrk.body = {_lua_string(bodies[0])}\n"
    else:
        items = ", ".join(_lua_string(b) for b in bodies)
        head += (
            f"local bodies = {{{items}}}\nlocal n = 0\n"
            "request = function()\n  n = n + 1\n"
            "  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])\nend\n"
        )
    return head + _WRK_DONE


def _lua_string(body: bytes) -> str:
    return "'" + body.decode().replace("\\", "\\\\").replace("'", "\\'") + "'"


def closed_loop(url: str, bodies: list[bytes], connections: int, duration_s: float, timeout_s: float = 10.0) -> dict:
    """``wrk`` for ``duration_s`` at ``connections``; req/s, latency (ms) and errors."""
    wrk = wrk_path()
    if wrk is None:
        raise LoadError("wrk is not installed (apt-get install -y wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(bodies))
    try:
        cmd = [
            wrk, "-t1", f"-c{connections}", f"-d{max(1, math.ceil(duration_s))}s",
            f"--timeout={max(1, math.ceil(timeout_s))}s", "-s", script.name, url,
        ]  # fmt: skip
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
        except subprocess.TimeoutExpired as exc:
            raise LoadError(f"wrk did not finish: {' '.join(cmd)}") from exc
    finally:
        os.unlink(script.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    raw = orjson.loads(line[len("WRKJSON ") :])
    errors = raw["errors"]
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - errors["status"]
    lat = {k: v / 1000.0 for k, v in raw["latency_us"].items()}
    lat["wrk_mean"] = lat.pop("mean")
    # Little's law: in a closed loop the mean latency is connections / throughput. wrk's own
    # mean is kept as wrk_mean; it disagrees with the request count when a Lua request() is used.
    if raw["requests"] > 0:
        lat["mean"] = connections * seconds / raw["requests"] * 1000.0
    return {
        "mode": "closed",
        "connections": connections,
        "duration_s": round(seconds, 3),
        "requests": raw["requests"],
        "rps": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "latency_ms": {k: round(v, 3) for k, v in lat.items()},
        "errors": errors,
        "error_count": sum(errors.values()),
    }


# -- fixed-rate open loop ---------------------------------------------------------------
class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams (no client library in the way).

    After each answer: ``server_s`` (a ``Server-Timing: app;dur=<ms>`` header's time, or None)
    and ``reusable`` (False once the server said ``Connection: close``)."""

    __slots__ = ("reader", "reusable", "server_s", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.server_s: float | None = None
        self.reusable = True

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes) -> int:
        """Send one request; its status."""
        status, _, _ = await self.exchange(head, body)
        return status

    async def exchange(self, head: bytes, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send a request (``head`` ends with the blank line); the status, headers and body of the answer."""
        self.writer.write(head + body)
        line = await self.reader.readuntil(b"\r\n\r\n")
        status = int(line.split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for header in line.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        timing = headers.get(b"server-timing", b"")
        self.server_s = float(timing.split(b"dur=", 1)[1].split(b";")[0]) / 1000 if b"dur=" in timing else None
        if headers.get(b"connection", b"").lower() == b"close":
            self.reusable = False
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append((await self.reader.readexactly(size + 2))[:-2])
                if size == 0:
                    break
            return status, headers, b"".join(chunks)
        length = int(headers.get(b"content-length", b"0"))
        return status, headers, (await self.reader.readexactly(length)) if length else b""

    def close(self) -> None:
        self.writer.close()


def request_head(
    method: str, host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """The request line and headers of a JSON request with ``body``."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode()


def open_loop(
    url: str,
    bodies: list[bytes],
    rate: float,
    duration_s: float,
    max_connections: int = 256,
    timeout_s: float = 10.0,
    schedule: list[float] | None = None,
    record_sends: bool = False,
    within_s: float | None = None,
) -> dict:
    """Send ``rate`` requests per second for ``duration_s``; latency from each intended send time.

    ``schedule`` (seconds from the start, sorted) replaces the even spacing: request ``i`` is
    due at ``schedule[i]`` (e.g. Poisson arrivals); request ``i`` sends ``bodies[i % len(bodies)]``.
    ``record_sends`` adds ``sends``: (when it was really sent, seconds from the start; its
    latency from that moment; the server's own time from a ``Server-Timing`` header, or None)
    for each answered request. A request whose reused keep-alive
    connection was closed by the server is sent again once on a new connection.
    ``within_s``: also count the requests answered 200 within that many seconds (``within``)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    coro = open_loop_async(url, bodies, rate, duration_s, max_connections, timeout_s, schedule, record_sends, within_s)
    return runner(coro)  # type: ignore[no-any-return]


async def open_loop_async(
    url: str,
    bodies: list[bytes],
    rate: float,
    duration_s: float,
    max_connections: int,
    timeout_s: float,
    schedule: list[float] | None = None,
    record_sends: bool = False,
    within_s: float | None = None,
) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    heads = [request_head("POST", host, port, path, b) for b in bodies]
    offsets = schedule if schedule is not None else [i / rate for i in range(max(1, int(rate * duration_s)))]
    total = len(offsets)
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    opened = 0
    slots = asyncio.Semaphore(max_connections)
    latencies: list[float] = []
    by_status: dict[str, list[float]] = {}  # from the intended send time
    service_by_status: dict[str, list[float]] = {}  # from the moment the request was written
    statuses: dict[str, int] = {}
    errors = {"connect": 0, "read": 0, "timeout": 0, "status": 0}
    lag_max = 0.0
    sends: list[tuple[float, float, float | None]] | None = [] if record_sends else None
    within = 0

    async def one(i: int, due: float) -> None:
        nonlocal opened, within
        async with slots:
            k = i % len(bodies)
            for attempt in (0, 1):
                conn = idle.pop() if idle and not attempt else None
                reused = conn is not None
                try:
                    if conn is None:
                        conn = await Connection.open(host, port)
                        opened += 1
                except OSError:
                    errors["connect"] += 1
                    return
                sent = time.perf_counter()
                try:
                    status = await asyncio.wait_for(conn.request(heads[k], bodies[k]), timeout_s)
                    break
                except TimeoutError:
                    errors["timeout"] += 1
                    conn.close()
                    return
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    conn.close()
                    if reused and not attempt:  # the server closed an idle keep-alive connection: resend once
                        continue
                    errors["read"] += 1
                    return
            answered = time.perf_counter()
            latencies.append(answered - due)
            if sends is not None:
                sends.append((sent - t0, answered - sent, conn.server_s))
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            by_status.setdefault(str(status), []).append(answered - due)
            service_by_status.setdefault(str(status), []).append(answered - sent)
            if status != 200:
                errors["status"] += 1
            elif within_s is not None and answered - due <= within_s:
                within += 1
            if conn.reusable:
                idle.append(conn)
            else:
                conn.close()

    tasks: list[asyncio.Task[None]] = []
    # perf_counter, not loop.time(): uvloop's clock has millisecond resolution
    wall0 = time.perf_counter()
    t0 = wall0 + 0.05
    for i in range(total):
        due = t0 + offsets[i]
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag_max = max(lag_max, -delay)
        tasks.append(loop.create_task(one(i, due)))
    if tasks:
        await asyncio.wait(tasks, timeout=timeout_s + 5)
    for task in tasks:
        task.cancel()
    wall = time.perf_counter() - wall0
    for conn in idle:
        conn.close()
    done = sorted(latencies)
    return {
        "mode": "open",
        "rate": rate,
        "duration_s": round(wall, 3),
        "requests": total,
        "completed": len(done),
        "achieved_rps": round(len(done) / wall, 1) if wall > 0 else 0.0,
        "connections_opened": opened,
        "max_send_lag_ms": round(lag_max * 1000, 3),
        "latency_ms": _summary_ms(done),
        "latency_ms_by_status": {k: _summary_ms(sorted(v)) for k, v in sorted(by_status.items())},
        "service_ms_by_status": {k: _summary_ms(sorted(v)) for k, v in sorted(service_by_status.items())},
        "statuses": statuses,
        "errors": errors,
        "error_count": sum(errors.values()),
        **({"sends": sorted(sends)} if sends is not None else {}),
        **({"within": within} if within_s is not None else {}),
    }


def _summary_ms(sorted_s: list[float]) -> dict[str, float]:
    if not sorted_s:
        return {}

    def pct(p: float) -> float:
        return sorted_s[min(len(sorted_s) - 1, max(0, math.ceil(p / 100 * len(sorted_s)) - 1))] * 1000

    return {
        "mean": round(sum(sorted_s) / len(sorted_s) * 1000, 3),
        "min": round(sorted_s[0] * 1000, 3),
        "p50": round(pct(50), 3),
        "p90": round(pct(90), 3),
        "p99": round(pct(99), 3),
        "p999": round(pct(99.9), 3),
        "max": round(sorted_s[-1] * 1000, 3),
    }
