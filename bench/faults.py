"""Fault injection against a real ``graphserve deploy``: the server process and its
process tree, its metrics, and clients that misbehave. Used by the reliability scenarios
(``bench/reliability.py``) and the fault suite (``tests/faults/``).

    with Deployed(["tests.graphs.fault_graphs:sleepy"], "--max-in-flight", "4") as server:
        server.url, server.pid, server.tree()      # Ray's raylet and workers are in the tree
        server.metric("graphserve_in_flight_requests", graph="sleepy")
        server.stop(signal.SIGTERM)                # -> the exit status

Everything talks to 127.0.0.1 only. The server runs in its own session, so a test that
fails half-way still ends every process it started (:meth:`Deployed.close`). Waits are
bounded and wait on something observable (a line on stdout, a metric, a process
exiting), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .coldstart import process_tree
from .load import Connection, request_head
from .servers import ROOT, bench_env

HOST = "127.0.0.1"


class FaultError(RuntimeError):
    """The server under test did not start or misbehaved in a way the harness cannot measure."""


def alive(pids: list[int]) -> list[int]:
    """The processes of ``pids`` that still exist (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy (returned) or ``timeout_s`` passes (FaultError naming ``what``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise FaultError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)


class Deployed:
    """``graphserve deploy TARGETS --port 0 --backend BACKEND FLAGS`` in a session of its own."""

    def __init__(
        self,
        targets: list[str],
        *flags: str,
        backend: str = "local",
        nofile: int | None = None,
        ready_timeout_s: float = 180.0,
        env: dict[str, str] | None = None,
    ) -> None:
        argv = [sys.executable, "-m", "graphserve", "deploy", *targets, "--port", "0", "--backend", backend]
        argv += ["--cluster", "none", *flags]
        if nofile is not None:  # the server's file-descriptor limit, as an operator's ulimit -n
            argv = ["prlimit", f"--nofile={nofile}:{nofile}", *argv]
        self.argv = argv
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**bench_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self._seen: set[int] = set()
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        try:
            self.url = self._ready_url(ready_timeout_s)
        except BaseException:
            self.close()
            raise
        self.port = int(self.url.rsplit(":", 1)[1])

    def _out(self, line: str) -> None:
        self.stdout.append(line)
        self.lines.put(line)

    @staticmethod
    def _pump(stream: Any, put: Callable[[str], None]) -> None:
        for line in stream:
            put(line)

    def _ready_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "ready at " in line:
                return line.split("ready at ", 1)[1].split()[0]
        raise FaultError(f"{' '.join(self.argv)} did not get ready:\n{self.log()[-4000:]}")

    # -- the process ---------------------------------------------------------------------
    def tree(self) -> list[int]:
        """The server's descendants now (Ray's GCS, raylet and workers for a Ray it started);
        every process ever seen is remembered for :meth:`leftovers` and :meth:`close`."""
        found = process_tree(self.pid)[1:]
        self._seen.update(found)
        return found

    def leftovers(self) -> list[int]:
        """Processes the server started that still run (after it exited: none should)."""
        self.tree()
        return alive(sorted(self._seen))

    def replica_pids(self) -> list[int]:
        """Ray worker processes that hold a graphserve replica actor."""
        return [pid for pid in self.tree() if command_line(pid).startswith("ray::ReplicaActor")]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 90.0) -> int:
        self.tree()
        self.proc.send_signal(sig)
        return self.proc.wait(timeout_s)

    def log(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def close(self) -> None:
        """End the server and everything it started (only those: by process group and pid)."""
        if self.proc.poll() is None:
            self.tree()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        for pid in alive(sorted(self._seen)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pump in self._pumps:
            pump.join(5)

    def __enter__(self) -> Deployed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- over HTTP -----------------------------------------------------------------------
    def metrics(self, attempts: int = 50) -> dict[str, float]:
        """The Prometheus exposition as {'name{labels}': value}. A server under attack may turn
        the scrape away (503, a closed connection): it is tried again, ``attempts`` times."""
        import urllib.error
        import urllib.request

        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(self.url + "/-/metrics", timeout=10) as response:
                    text = response.read().decode()
                break
            except (urllib.error.HTTPError, ConnectionError) as exc:
                if attempt == attempts - 1:
                    raise FaultError(f"the metrics could not be read: {exc}") from exc
                time.sleep(0.05)
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def metric(self, name: str, **labels: str) -> float:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return self.metrics().get(f"{name}{{{inner}}}" if inner else name, 0.0)


# -- clients -----------------------------------------------------------------------------
async def post(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One POST on a fresh connection: (status, body)."""
    connection = await Connection.open(HOST, port)
    try:
        status, _, payload = await connection.exchange(request_head("POST", HOST, port, path, body, headers), body)
        return status, payload
    finally:
        connection.close()


async def slow_header_client(port: int, stop: asyncio.Event, interval_s: float, log: list[dict[str, Any]]) -> None:
    """Sends a request's headers one byte every ``interval_s`` (never the final blank line);
    see :func:`_trickle`."""
    head = request_head("POST", HOST, port, "/", b"{}")
    await _trickle(port, [head[i : i + 1] for i in range(len(head) - 2)], stop, interval_s, log)


async def slow_body_client(
    port: int, path: str, size: int, stop: asyncio.Event, interval_s: float, log: list[dict[str, Any]]
) -> None:
    """Sends complete headers announcing ``size`` body bytes, then the body one byte every
    ``interval_s``; see :func:`_trickle`."""
    head = request_head("POST", HOST, port, path, b"x" * size)
    await _trickle(port, [head + b"[", *([b" "] * (size - 1))], stop, interval_s, log)


async def _trickle(
    port: int, chunks: list[bytes], stop: asyncio.Event, interval_s: float, log: list[dict[str, Any]]
) -> None:
    """Opens a connection and sends ``chunks`` one every ``interval_s``; when the server answers
    or closes it, logs the status it sent and how long the connection lasted, waits
    ``interval_s`` and opens another (as slowloris tools keep their connections up), until
    ``stop``."""
    while not stop.is_set():
        opened = time.perf_counter()
        entry: dict[str, Any] = {"status": None}
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            log.append({"status": "refused", "lasted_s": 0.0})
            await _pause(stop, interval_s)
            continue
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                writer.write(chunk)
                await writer.drain()
                if await _closed_within(reader, interval_s, entry):
                    break
        except OSError:
            entry["status"] = entry["status"] or "reset"
        finally:
            writer.close()
        entry["lasted_s"] = time.perf_counter() - opened
        if not stop.is_set():
            log.append(entry)
            await _pause(stop, interval_s)


async def _closed_within(reader: asyncio.StreamReader, seconds: float, entry: dict[str, Any]) -> bool:
    """Wait up to ``seconds`` for the server to answer or close; record the status it sent."""
    try:
        data = await asyncio.wait_for(reader.read(65536), seconds)
    except TimeoutError:
        return False
    except OSError:
        entry["status"] = entry["status"] or "reset"
        return True
    if data.startswith(b"HTTP/1.1 "):
        entry["status"] = int(data.split(b" ", 2)[1])
    elif not data:
        entry["status"] = entry["status"] or "closed"
    return True


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
