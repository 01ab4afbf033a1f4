"""Starting and stopping each benchmarked system as a subprocess on a free loopback port.

Each system serves every selected workload at ``POST /<workload id, lower case>``.
A server is ready when a real request to each of its workloads answers 200 with the
expected result (so every system is checked to do the same work before it is loaded).
The subprocess runs in its own session; stopping sends SIGTERM, then SIGKILL to its
process group (Ray's raylet and workers included) if it does not exit in time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import costs

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("starlette", "local", "ray", "rayserve")
_PORT_LINE = re.compile(r"^PORT (\d+)$", re.MULTILINE)
LABELS = {
    "starlette": "raw Starlette",
    "local": "graphserve local",
    "ray": "graphserve Ray",
    "rayserve": "Ray Serve",
}


class ServerError(RuntimeError):
    """A benchmarked server did not start or answered wrongly."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(system: str, workloads: list[str]) -> list[str]:
    """The server's command line; it picks a free port itself and prints ``PORT <n>``."""
    py = sys.executable
    names = ",".join(workloads)
    if system == "starlette":
        return [py, "-m", "bench.raw_starlette", "--port", "0"]
    if system in ("local", "ray"):
        return [py, "-m", "bench.gs_server", "--backend", system, "--port", "0", "--workloads", names]
    if system == "rayserve":
        return [py, "-m", "bench.rayserve_apps", "--port", "0", "--workloads", names]
    raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    system: str
    port: int
    workloads: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    started_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def url(self, workload: str) -> str:
        return f"http://127.0.0.1:{self.port}/{workload.lower()}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def check(server: Server, workload: str) -> None:
    """One request per distinct body; the answer must be 200 and the expected value."""
    bodies = costs.W5_BODIES[-2:] if workload == "W5" else [costs.BODY]
    for body in bodies:
        status, payload = post(server.url(workload), body)
        x = orjson.loads(body)["x"]
        if status != 200 or orjson.loads(payload) != costs.expected(workload, x):
            raise ServerError(
                f"{server.system} {workload}: POST {body.decode()} answered {status} {payload[:300]!r}, "
                f"expected {costs.expected(workload, x)!r}"
            )


def start(system: str, workloads: list[str], log_dir: Path, timeout_s: float = 180.0) -> Server:
    """Start ``system`` serving ``workloads``; returns once each answers correctly."""

    def answers(server: Server, workload: str) -> bool:
        try:
            check(server, workload)
        except ServerError as exc:
            if "answered 404" not in str(exc) and "answered 5" not in str(exc):
                raise
            return False  # not routed or not ready yet
        return True

    log_path = log_dir / f"{system}-{'-'.join(workloads)}.log"
    return launch(command(system, workloads), system, workloads, log_path, answers, timeout_s)


def launch(
    cmd: list[str],
    system: str,
    workloads: list[str],
    log_path: Path,
    answers: Callable[[Server, str], bool],
    timeout_s: float,
) -> Server:
    """Run ``cmd`` (a server that prints ``PORT <n>`` once it has bound) with its output in
    ``log_path``; returns once ``answers(server, workload)`` is true for each of ``workloads``.
    ``answers`` false or an OSError: not ready yet, asked again; a ServerError: the server is
    wrong, stopped and raised. A server that exits or passes ``timeout_s`` is a ServerError."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=bench_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(system, 0, workloads, process, log_path)
    deadline = time.monotonic() + timeout_s
    pending = list(workloads)
    while pending:
        if not server.port:  # the server prints the port it bound
            found = _PORT_LINE.search(server.log_tail(1_000_000))
            if found:
                server.port = int(found.group(1))
        if process.poll() is not None:
            raise ServerError(f"{system} exited with {process.returncode} while starting:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            stop(server)
            raise ServerError(f"{system} did not answer within {timeout_s:g}s:\n{server.log_tail()}")
        if not server.port:
            time.sleep(0.05)
            continue
        try:
            ready = answers(server, pending[0])
        except OSError:
            ready = False
        except ServerError:
            stop(server)
            raise
        if not ready:
            time.sleep(0.1)
            continue
        pending.pop(0)
    server.started_s = time.perf_counter() - t0
    return server


def stop(server: Server, timeout_s: float = 60.0) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    # whatever it started in its session (Ray's raylet, GCS, workers) goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(10)


@contextlib.contextmanager
def running(system: str, workloads: list[str], log_dir: Path) -> Iterator[Server]:
    server = start(system, workloads, log_dir)
    try:
        yield server
    finally:
        stop(server)
