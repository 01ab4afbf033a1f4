"""Load generators over loopback.

* :func:`closed_loop`: ``wrk`` (one thread, ``c`` keep-alive connections, each sending
  its next request when the previous answer arrives). A Lua script posts the body (W5:
  cycles through ten bodies, 10% of them take the expensive branch) and prints wrk's
  summary as JSON, so nothing is scraped from wrk's text.
* :func:`open_loop`: a fixed-rate client (wrk2 is not packaged for Debian): request
  ``i`` is due at ``t0 + i / rate`` whatever happened before, and its latency is measured
  from that intended send time, so a stall shows up in the latency of every request
  it delayed (no coordinated omission). asyncio (uvloop) over raw keep-alive sockets;
  a new connection is opened when all are busy, up to ``max_connections``.
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
class _Conn:
    __slots__ = ("reader", "server_s", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.server_s: float | None = None

    async def request(self, head: bytes, body: bytes) -> int:
        """Send one request; its status (and ``server_s``: a ``Server-Timing: app;dur=<ms>`` header's time)."""
        self.writer.write(head + body)
        line = await self.reader.readuntil(b"\r\n\r\n")
        status = int(line.split(b" ", 2)[1])
        length = None
        chunked = False
        self.server_s = None
        for header in line.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"server-timing" and b"dur=" in value:
                self.server_s = float(value.split(b"dur=", 1)[1].split(b";")[0]) / 1000
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


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
    coro = _open_loop(url, bodies, rate, duration_s, max_connections, timeout_s, schedule, record_sends, within_s)
    return runner(coro)  # type: ignore[no-any-return]


async def _open_loop(
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
    heads = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n\r\n"
        ).encode()
        for b in bodies
    ]
    offsets = schedule if schedule is not None else [i / rate for i in range(max(1, int(rate * duration_s)))]
    total = len(offsets)
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    opened = 0
    slots = asyncio.Semaphore(max_connections)
    latencies: list[float] = []
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
                        reader, writer = await asyncio.open_connection(host, port)
                        conn = _Conn(reader, writer)
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
            if status != 200:
                errors["status"] += 1
            elif within_s is not None and answered - due <= within_s:
                within += 1
            idle.append(conn)

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
