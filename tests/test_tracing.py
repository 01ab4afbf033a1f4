"""Traces over HTTP (``X-Graphserve-Trace: 1``) and OpenTelemetry export, on both backends.

OpenTelemetry is checked with the SDK's in-memory exporter: a span per request (child of
the caller's W3C ``traceparent``), a child span per node and per handle call with its
attributes, and the context the deployments see, in this process and inside Ray actors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.graphs import otel_graphs, page_graphs, rayserve_outputs
from tests.serving_utils import running_server

TRACE = {"X-Graphserve-Trace": "1"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


def serve_on(backend: str, app: Any, **options: Any) -> Any:
    if backend == "ray":
        options["backend"] = "ray"
        options["backend_options"] = {"metrics_interval_s": 0.2}
    return running_server(app, **options)


# -- X-Graphserve-Trace --------------------------------------------------------------------
def test_a_traced_request_gets_its_trace_beside_the_output(backend: str) -> None:
    with serve_on(backend, page_graphs.make_app()) as url:
        plain = httpx.post(url + "/", json={"text": "a long text"})
        traced = httpx.post(url + "/", json={"text": "a long text"}, headers={**TRACE, "X-Request-Id": "tr-1"})
        failed = httpx.post(url + "/", json={"text": "a long text", "fail": True}, headers=TRACE)
        stats = None
        if backend == "ray":  # latencies measured in the actors reach the page's figures
            for _ in range(100):
                stats = httpx.get(url + "/-/stats").json()["graphs"]["page_demo"]["nodes"]
                if stats["Classifier.__call__"]["calls"] >= 3:
                    break
                httpx.get(url + "/-/healthz")  # a short pause on the server's side, not a sleep here
    assert plain.json() == {"path": "long", "n": 11}  # untraced: the output alone
    body = traced.json()
    assert body["output"] == {"path": "long", "n": 11}
    trace = body["trace"]
    assert trace["request_id"] == "tr-1" and trace["backend"] == backend and trace["skipped"] == ["short_path"]
    nodes = {n["node"]: n for n in trace["nodes"]}
    assert nodes["Embed.__call__"]["batch_size"] == 1 and nodes["long_path"]["replica"] in (0, 1)
    error = failed.json()
    assert failed.status_code == 500 and error["node"] == "long_path"
    assert error["trace"]["status"] == "error"
    assert {n["node"]: n["status"] for n in error["trace"]["nodes"]}["long_path"] == "error"
    if stats is not None:
        assert stats["Classifier.__call__"]["calls"] >= 3 and stats["Classifier.__call__"]["p50_ms"] is not None


def test_an_output_sent_as_it_is_carries_its_trace_in_a_header() -> None:
    with running_server(rayserve_outputs.app) as url:
        response = httpx.post(url + "/?kind=bytes", headers=TRACE)
        plain = httpx.post(url + "/?kind=bytes")
    assert response.content == b"\x00\x01raw" and "x-graphserve-trace" not in plain.headers
    trace = json.loads(response.headers["x-graphserve-trace"])
    assert [n["node"] for n in trace["nodes"] if n["kind"] == "deployment"] == ["outputs"]


def test_a_refused_request_has_no_trace() -> None:
    with running_server(page_graphs.make_app(), token="t") as url:
        refused = httpx.post(url + "/", json={"text": "x"}, headers=TRACE)
        invalid = httpx.post(url + "/", json={"nope": 1}, headers={**TRACE, "Authorization": "Bearer t"})
    assert refused.status_code == 401 and "trace" not in refused.json()
    assert invalid.status_code == 422 and invalid.json()["trace"]["nodes"] == []  # refused by the schema


# -- OpenTelemetry ---------------------------------------------------------------------------
@pytest.fixture
def spans() -> Iterator[tuple[Any, Any]]:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_open_telemetry_spans_per_request_and_node_follow_traceparent(backend: str, spans: tuple[Any, Any]) -> None:
    provider, exporter = spans
    with serve_on(backend, otel_graphs.make_app(), tracer_provider=provider) as url:
        response = httpx.post(url + "/", json=1, headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    result = response.json()  # not asked for the trace: the output alone
    finished = {span.name: span for span in exporter.get_finished_spans()}
    request = finished["graphserve otel_demo"]
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == PARENT_ID and request.parent.is_remote
    assert request.attributes["graphserve.graph"] == "otel_demo"
    assert request.attributes["http.response.status_code"] == 200
    direct = finished["graphserve.node Direct.__call__"]
    assert direct.parent.span_id == request.context.span_id
    assert dict(direct.attributes) == {
        "graphserve.graph": "otel_demo",
        "graphserve.node": "Direct.__call__",
        "graphserve.kind": "deployment",
        "graphserve.deployment": "Direct",
        "graphserve.replica": 0,
        "graphserve.status": "ok",
    }
    outer = finished["graphserve.node Outer.__call__"]
    handle = finished["graphserve.node SeesContext.__call__"]
    assert handle.parent.span_id == outer.context.span_id and handle.attributes["graphserve.kind"] == "handle"
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in finished.values())
    # the deployments ran inside their node's context, in this process or in a Ray actor
    assert result["direct"] == {"trace_id": TRACE_ID, "span_id": format(direct.context.span_id, "016x")}
    assert result["nested"]["outer"]["span_id"] == format(outer.context.span_id, "016x")
    assert result["nested"]["inner"]["trace_id"] == TRACE_ID  # through the handle too
    node_spans = [s for s in finished.values() if s.name.startswith("graphserve.node")]
    assert all(request.start_time <= s.start_time and s.end_time <= request.end_time for s in node_spans)


def test_open_telemetry_batch_size_and_errors_on_node_spans(spans: tuple[Any, Any]) -> None:
    provider, exporter = spans
    with running_server(page_graphs.make_app(), tracer_provider=provider) as url:
        httpx.post(url + "/", json={"text": "a long text", "fail": True})
    finished = {span.name: span for span in exporter.get_finished_spans()}
    assert finished["graphserve.node Embed.__call__"].attributes["graphserve.batch_size"] == 1
    failed = finished["graphserve.node long_path"]
    assert failed.attributes["graphserve.status"] == "error" and not failed.status.is_ok
    assert finished["graphserve page_demo"].attributes["http.response.status_code"] == 500


def test_a_process_wide_tracer_provider_is_used_without_being_passed() -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    script = textwrap.dedent(
        f"""
        import json, httpx
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from graphserve.serving import serve
        from tests.graphs import page_graphs

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        server = serve(page_graphs.make_app(), port=0, blocking=False)
        httpx.post(server.url + "/", json={{"text": "tiny"}}, headers={{"traceparent": "{TRACEPARENT}"}})
        server.shutdown()
        print(json.dumps(sorted(s.name for s in exporter.get_finished_spans())))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.strip().splitlines()[-1])
    assert "graphserve page_demo" in names and "graphserve.node short_path" in names
    assert "graphserve.node long_path" not in names  # the arm not taken has no span


def test_a_records_fetch_gives_none_for_a_failed_or_endless_call_and_raises_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    pytest.importorskip("ray")
    from ray.exceptions import RayActorError

    from graphserve.runtime import tracing

    async def raising(error: BaseException) -> Any:
        raise error

    async def endless() -> Any:
        await asyncio.Event().wait()

    async def record() -> Any:
        return {"node": "n"}

    monkeypatch.setattr(tracing, "_SETTLE_TIMEOUT_S", 0.01)
    assert asyncio.run(tracing._fetch(record())) == {"node": "n"}
    assert asyncio.run(tracing._fetch(raising(RayActorError()))) is None  # its actor died
    assert asyncio.run(tracing._fetch(endless())) is None  # it never ended
    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(tracing._fetch(raising(ValueError("a bug"))))
