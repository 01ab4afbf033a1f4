"""Connection-level limits (runtime/connections.py) on a real server, over raw sockets: the
header timeout, the header size limit, keep-alive, the cap on open connections, and
uvicorn's own 400 as JSON. Each server gets short limits so the waits stay short; every
wait is bounded and on something observable (bytes, a close, a metric)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from graphserve.errors import GraphError
from graphserve.runtime.connections import (
    NEW_GRACE_S,
    CoalescingWriter,
    ConnectionLimits,
    default_max_connections,
    sweep_interval,
)
from graphserve.runtime.http_defaults import HEADER_TIMEOUT_S, KEEP_ALIVE_S
from graphserve.runtime.http_server import Server
from graphserve.serving import serve
from tests.graphs import ingress_graphs as graphs
from tests.serving_utils import wait_for

REQUEST = b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"x": 1}'
SLOW = b'POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"delay": 1.0}'


@contextmanager
def running(**limits: object) -> Iterator[Server]:
    started = serve([graphs.echo_app, graphs.slow_app], port=0, blocking=False, **limits)
    try:
        yield started
    finally:
        started.shutdown(timeout=60)


@contextmanager
def server(**limits: object) -> Iterator[tuple[str, int]]:
    with running(**limits) as started:
        yield started.url, started.port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by the socket timeout)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def status_and_json(data: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head.split(b" ", 2)[1]), json.loads(body)


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(url + "/-/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_headers_that_do_not_arrive_in_time_get_408_and_the_connection_closes() -> None:
    with server(header_timeout_s=0.3) as (url, port):
        sock = connect(port)
        started = time.monotonic()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # and no more
        status, body = status_and_json(read_until_closed(sock))
        assert status == 408 and "0.3s" in str(body["error"])
        assert 0.25 < time.monotonic() - started < 5
        assert metric(url, 'graphserve_connections_closed_total{reason="header_timeout"}') == 1
        assert metric(url, 'graphserve_requests_total{graph="",status="408"}') == 1


def test_a_body_that_does_not_arrive_in_time_gets_408_counted_on_its_graph() -> None:
    with running(body_timeout_s=0.3) as started:
        sock = connect(started.port)
        started_at = time.monotonic()
        sock.sendall(b'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"x": ')  # and no more
        status, body = status_and_json(read_until_closed(sock))
        assert status == 408 and "body did not arrive within 0.3s" in str(body["error"])
        assert 0.25 < time.monotonic() - started_at < 5
        metrics = started.metrics
        wait_for(
            lambda: metrics.counter_value("graphserve_requests_total", (("graph", "echo"), ("status", "408"))) == 1,
            "the 408 counted",
        )
        assert metrics.counter_value("graphserve_connections_closed_total", (("reason", "body_timeout"),)) == 1
        assert metrics.counter_value("graphserve_requests_total", (("graph", ""), ("status", "408"))) == 0
        assert started.ingress.graphs["echo"].reading == 0


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    with server(header_timeout_s=0.3) as (url, port):
        sock = connect(port)
        assert read_until_closed(sock) == b""
        assert metric(url, 'graphserve_connections_closed_total{reason="idle"}') == 1


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s() -> None:
    with server(keep_alive_s=0.3) as (url, port):
        sock = connect(port)
        sock.sendall(REQUEST)
        started = time.monotonic()
        data = read_until_closed(sock)  # the answer, then the close
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'{"y":2.0,"label":"a"}')
        assert 0.25 < time.monotonic() - started < 5
        assert metric(url, 'graphserve_connections_closed_total{reason="keep_alive"}') == 1


def test_limits_are_checked_by_one_timer_a_tenth_of_the_shorter_limit_apart() -> None:
    assert sweep_interval(ConnectionLimits(header_timeout_s=0.3, keep_alive_s=5)) == pytest.approx(0.03)
    assert sweep_interval(ConnectionLimits()) == pytest.approx(min(HEADER_TIMEOUT_S, KEEP_ALIVE_S) / 10)
    assert sweep_interval(ConnectionLimits(header_timeout_s=0.01, keep_alive_s=0.01)) == 0.01  # at least 10 ms
    assert sweep_interval(ConnectionLimits(header_timeout_s=600, keep_alive_s=600)) == 1.0  # at most 1 s


def test_headers_larger_than_the_limit_get_431() -> None:
    with server(max_header_bytes=2048) as (_, port):
        sock = connect(port)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n")
        status, body = status_and_json(read_until_closed(sock))
        assert status == 431 and "2048 bytes" in str(body["error"])


def test_a_request_uvicorn_cannot_parse_gets_a_json_400_that_is_counted() -> None:
    with server() as (url, port):
        sock = connect(port)
        sock.sendall(b"NOT HTTP AT ALL\x00\r\n\r\n")
        status, body = status_and_json(read_until_closed(sock))
        assert status == 400 and "invalid HTTP request" in str(body["error"])
        assert metric(url, 'graphserve_requests_total{graph="",status="400"}') == 1


def test_past_the_cap_the_longest_idle_connection_makes_room() -> None:
    with running(max_connections=3) as started:
        registry = started.protocol.registry
        idle = [connect(started.port) for _ in range(3)]
        wait_for(lambda: registry.count == 3, "3 connections accepted")
        time.sleep(NEW_GRACE_S)  # the grace they had to send a request: now they can be evicted
        newcomer = connect(started.port)
        newcomer.sendall(REQUEST)
        assert newcomer.recv(65536).startswith(b"HTTP/1.1 200")
        assert read_until_closed(idle[0]) == b""  # the longest idle went, silently
        assert registry.count == 3
        assert started.metrics.counter_value("graphserve_connections_closed_total", (("reason", "evicted"),)) == 1


def test_past_the_cap_a_new_connection_must_send_its_request_at_once() -> None:
    with running(max_connections=1) as started:
        first = connect(started.port)
        first.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # holds the only place
        wait_for(lambda: started.protocol.registry.count == 1, "the first connection")
        quiet = connect(started.port)  # let in above the cap on probation, sends nothing
        status, body = status_and_json(read_until_closed(quiet))
        assert status == 503 and "too many open connections" in str(body["error"])
        prompt = connect(started.port)  # on probation too, but sends its request: served
        prompt.sendall(REQUEST)
        assert prompt.recv(65536).startswith(b"HTTP/1.1 200")
        first.close()


def test_when_every_connection_has_a_request_running_a_new_one_gets_503() -> None:
    with running(max_connections=2) as started:  # a third may come in on probation
        busy = [connect(started.port) for _ in range(3)]
        for sock in busy:
            sock.sendall(SLOW)
        wait_for(lambda: started.ingress.graphs["slow"].in_flight == 3, "3 requests running")
        refused = connect(started.port)
        status, body = status_and_json(read_until_closed(refused))
        assert status == 503 and "too many open connections" in str(body["error"])
        for sock in busy:  # the ones admitted are answered
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_limits_are_checked() -> None:
    with pytest.raises(GraphError, match="header_timeout_s must be > 0"):
        ConnectionLimits(header_timeout_s=0)
    with pytest.raises(GraphError, match="max_connections must be >= 1"):
        ConnectionLimits(max_connections=0)
    assert default_max_connections(256) == 128 and default_max_connections(20) == 16
    assert default_max_connections(10**6) == 10_000


class _Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def test_a_response_head_and_its_body_go_out_in_one_write() -> None:
    transport = _Recorder()
    writer = CoalescingWriter(transport)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.writes == []  # held: its client cannot use it before the body
    writer.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")  # a HEAD request's: no body write
    writer.flush()  # (the protocol flushes when the response completes)
    assert transport.writes[-1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    writer.close()  # a head held when the connection closes is written first
    assert transport.writes[-1] == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" and transport.closed


def test_a_streamed_head_and_100_continue_go_out_at_once() -> None:
    transport = _Recorder()
    writer = CoalescingWriter(transport)
    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")  # its first chunk may come much later
    writer.write(b"2\r\n{}\r\n")
    assert transport.writes == [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"2\r\n{}\r\n",
    ]


def test_a_head_request_gets_its_headers_over_a_real_server() -> None:
    with server() as (url, _):
        response = httpx.head(url + "/-/healthz")
        assert response.status_code in (200, 405) and "content-length" in response.headers
