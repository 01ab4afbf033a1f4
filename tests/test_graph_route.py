"""The request path of one graph route, driven as an ASGI app in process (no server):
what only a hand-made ASGI conversation can show (a client that leaves, a chunked body)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from graphserve.runtime.graph_route import CLIENT_LEFT, GraphRoute, RequestHead, valid_request_id
from graphserve.runtime.ingress import Ingress
from graphserve.runtime.running_graph import GraphRuntime
from graphserve.serving import load_plans
from tests.graphs import ingress_graphs as graphs


@pytest.fixture
async def ingress() -> AsyncIterator[Ingress]:
    (plan,) = load_plans(graphs.echo_app, cluster=None)
    app = Ingress([GraphRuntime(plan)], max_body_bytes=64)
    await app.startup()
    try:
        yield app
    finally:
        await app.shutdown()


async def request(
    app: Ingress, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]], path: str = "/echo"
) -> list[Any]:
    """Send one POST to ``path`` with ``messages`` as what the client sends; return what the app sent."""
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
    incoming = list(messages)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def requests_counted(app: Ingress, status: int) -> float:
    return app.metrics.counter_value("graphserve_requests_total", (("graph", "echo"), ("status", str(status))))


async def test_a_client_that_leaves_before_its_body_gets_nothing_and_is_counted_499(ingress: Ingress) -> None:
    sent = await request(ingress, [{"type": "http.disconnect"}], [])
    assert sent == []
    assert requests_counted(ingress, CLIENT_LEFT) == 1
    assert ingress.graphs["echo"].in_flight == 0


async def test_a_chunked_body_is_joined_and_bounded(ingress: Ingress) -> None:
    chunks = [
        {"type": "http.request", "body": b'{"x": ', "more_body": True},
        {"type": "http.request", "body": b"2}", "more_body": False},
    ]
    sent = await request(ingress, chunks, [(b"x-request-id", b"abc")])
    assert sent[0]["status"] == 200
    assert (b"x-request-id", b"abc") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"]) == {"y": 4.0, "label": "a"}

    too_much = [{"type": "http.request", "body": b" " * 40, "more_body": True}] * 2
    sent = await request(ingress, too_much, [])
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert ingress.graphs["echo"].in_flight == 0


async def test_a_client_that_leaves_a_long_request_cancels_its_work_and_short_ones_leave_nothing_behind() -> None:
    (echo, slow) = load_plans([graphs.echo_app, graphs.slow_app], cluster=None)
    app = Ingress([GraphRuntime(echo), GraphRuntime(slow)])
    await app.startup()
    try:
        body = {"type": "http.request", "body": b'{"x": 1}', "more_body": False}
        for _ in range(3):  # answered before DISCONNECT_CHECK_S: no watcher ever starts
            assert (await request(app, [body], []))[0]["status"] == 200
        assert watchers() == 0
        waiting = app.graphs["echo"].watchlist()._waiting  # kept until their check is due ...
        assert waiting and all(watch.done and watch._task is None for _, watch in waiting)  # ... holding no task
        finished = len(graphs.FINISHED)
        leaving = [{"type": "http.request", "body": b'{"delay": 5}', "more_body": False}, {"type": "http.disconnect"}]
        sent = await asyncio.wait_for(request(app, leaving, [], path="/slow"), 5)  # not the 5 s sleep
        assert sent == [] and len(graphs.FINISHED) == finished  # cancelled, never answered
        assert app.metrics.counter_value("graphserve_requests_total", (("graph", "slow"), ("status", "499"))) == 1
    finally:
        await app.shutdown()


def watchers() -> int:
    return sum(1 for task in asyncio.all_tasks() if "_watch" in repr(task.get_coro()))


def test_the_request_id_is_the_callers_only_when_valid() -> None:
    assert RequestHead([(b"x-request-id", b"req-1"), (b"content-length", b"2")]).request_id == b"req-1"
    for bad in (b"", b"has space", b"x" * 201):
        assert len(valid_request_id(bad)) == 24  # a new one: 12 random bytes in hex
    assert valid_request_id(None) != valid_request_id(None)


async def test_a_body_still_arriving_takes_no_in_flight_place() -> None:
    (plan,) = load_plans(graphs.echo_app, cluster=None)
    app = Ingress([GraphRuntime(plan)], max_in_flight=1)
    await app.startup()
    try:
        rest = asyncio.Event()

        async def slow_receive() -> dict[str, Any]:
            await rest.wait()
            return {"type": "http.request", "body": b'{"x": 1}', "more_body": False}

        async def send_nowhere(message: dict[str, Any]) -> None:
            pass

        scope = {"type": "http", "method": "POST", "path": "/echo", "headers": [], "query_string": b""}
        uploading = asyncio.ensure_future(app(scope, slow_receive, send_nowhere))
        while app.graphs["echo"].reading == 0:
            await asyncio.sleep(0)
        assert app.graphs["echo"].in_flight == 0  # reading a body is not running
        sent = await request(app, [{"type": "http.request", "body": b'{"x": 2}', "more_body": False}], [])
        assert sent[0]["status"] == 200  # the one place was free for a request that had arrived
        rest.set()
        await asyncio.wait_for(uploading, 5)
        assert requests_counted(app, 200) == 2
    finally:
        await app.shutdown()


async def test_json_past_a_limit_is_422_saying_which() -> None:
    (plan,) = load_plans(graphs.echo_app, cluster=None)
    app = Ingress([GraphRuntime(plan)])
    await app.startup()
    try:
        deep = b"[" * 65 + b"]" * 65
        sent = await request(app, [{"type": "http.request", "body": deep, "more_body": False}], [])
        assert sent[0]["status"] == 422
        assert "nested deeper than 64 levels" in orjson.loads(sent[1]["body"])["error"]
    finally:
        await app.shutdown()


async def test_an_unexpected_error_is_a_json_500_and_is_counted(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(result: Any, request_id: bytes) -> Any:
        raise KeyError("a bug in graphserve")

    monkeypatch.setattr(GraphRoute, "encode", lambda self, result, request_id: broken(result, request_id))
    sent = await request(ingress, [{"type": "http.request", "body": b'{"x": 1}', "more_body": False}], [])
    assert sent[0]["status"] == 500
    body = orjson.loads(sent[1]["body"])
    assert body["error"] == "graph 'echo' failed: KeyError" and "a bug" not in sent[1]["body"].decode()
    assert requests_counted(ingress, 500) == 1
    assert any("a bug in graphserve" in str(r.exc_info) for r in caplog.records if r.exc_info)
