"""The HTTP ingress against a real uvicorn server on 127.0.0.1 (a free port) and a real HTTP client."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from graphserve.errors import GraphError
from graphserve.runtime.ingress import Ingress
from graphserve.runtime.running_graph import GraphRuntime
from graphserve.serving import load_plans
from tests.graphs import ingress_graphs as graphs
from tests.serving_utils import running_server

ALL = [graphs.echo_app, graphs.slow_app, graphs.narrow_app, graphs.raw_app, graphs.deadline_app, graphs.batched_app]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server(ALL, max_body_bytes=4096) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match and (match.group(1) or "") == want:
            return float(match.group(2))
    return None


def wait_for_metric(client: httpx.Client, name: str, value: float, **labels: str) -> bool:
    for _ in range(200):  # bounded: at most ~10 s
        if metric(client.get("/-/metrics").text, name, **labels) == value:
            return True
        time.sleep(0.05)
    return False


# -- 200 and the request id --------------------------------------------------------------
def test_a_valid_request_gets_the_output_as_json(client: httpx.Client) -> None:
    response = client.post("/echo", json={"x": 2.5, "label": "b"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"y": 5.0, "label": "b"}


def test_every_response_carries_a_request_id(client: httpx.Client) -> None:
    generated = {client.post("/echo", json={"x": 1}).headers["x-request-id"] for _ in range(5)}
    assert len(generated) == 5 and all(re.fullmatch(r"[0-9a-f]{24}", rid) for rid in generated)
    given = client.post("/echo", json={"x": 1}, headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    assert client.post("/echo", json={"y": 1}, headers={"X-Request-Id": "bad-1"}).headers["x-request-id"] == "bad-1"
    assert client.get("/-/healthz", headers={"X-Request-Id": "ops-7"}).headers["x-request-id"] == "ops-7"
    assert client.get("/nowhere").headers["x-request-id"]
    too_long = client.post("/echo", json={"x": 1}, headers={"X-Request-Id": "x" * 300}).headers["x-request-id"]
    assert too_long != "x" * 300 and len(too_long) == 24


def test_raw_ingress_graph_gets_the_body_itself(client: httpx.Client) -> None:
    assert client.post("/raw", json={"b": 1, "a": 2}).json() == ["a", "b"]
    assert client.post("/raw", json=[1, 2]).json() == [1, 2]


def test_route_prefix_and_trailing_slash(client: httpx.Client) -> None:
    assert client.post("/api/narrow", json={"delay": 0}).json() == 0
    assert client.post("/echo/", json={"x": 1}).status_code == 200
    assert client.post("/narrow", json={"delay": 0}).status_code == 404


def test_a_single_graph_is_also_at_the_root() -> None:
    with running_server(graphs.echo_app) as base:
        assert httpx.post(base + "/", json={"x": 1}).json() == {"y": 2.0, "label": "a"}
        assert httpx.post(base + "/echo", json={"x": 1}).json() == {"y": 2.0, "label": "a"}


def test_several_graphs_have_no_root_route(client: httpx.Client) -> None:
    assert client.post("/", json={"x": 1}).status_code == 404


# -- 4xx -----------------------------------------------------------------------------------
def test_invalid_body_is_422_with_pydantics_errors(client: httpx.Client) -> None:
    response = client.post("/echo", json={"x": "not a number"})
    assert response.status_code == 422
    body = response.json()
    assert "Item" in body["error"]
    (error,) = body["detail"]
    assert error["loc"] == ["x"] and error["type"] == "float_parsing" and error["msg"]
    missing = client.post("/echo", json={}).json()["detail"]
    assert [e["type"] for e in missing] == ["missing"]


def test_missing_field_without_a_schema_is_422(client: httpx.Client) -> None:
    response = client.post("/api/narrow", json={"other": 1})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "delay"]


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post("/echo", content=b'{"x": 1', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]
    assert client.post("/echo", content=b"\xff\xfe").status_code == 400


def test_empty_body_is_validated_as_null(client: httpx.Client) -> None:
    assert client.post("/echo").status_code == 422


def test_body_above_the_limit_is_413(client: httpx.Client) -> None:
    big = {"x": 1, "label": "a" * 5000}
    response = client.post("/echo", json=big)
    assert response.status_code == 413
    assert "4096" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"x": 1, "label": "'
        for _ in range(10):
            yield b"a" * 1000
        yield b'"}'

    assert client.post("/echo", content=chunks()).status_code == 413
    small = client.post("/echo", content=iter([b'{"x": ', b"3}"]))
    assert small.status_code == 200 and small.json()["y"] == 6.0


def test_graph_routes_answer_post_and_get_only(client: httpx.Client) -> None:
    response = client.put("/echo", json={"x": 1})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert client.request("GET", "/echo", json={"x": 1}).json() == {"y": 2.0, "label": "a"}  # GET with a body


def test_unknown_route_is_404(client: httpx.Client) -> None:
    assert client.post("/nope", json={}).status_code == 404


# -- 5xx -----------------------------------------------------------------------------------
def test_node_failure_is_500_naming_the_node_without_a_traceback(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="graphserve.ingress"):
        response = client.post("/slow", json={"delay": 0, "fail": True}, headers={"X-Request-Id": "req-500"})
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"error", "node"}
    assert body["node"] == "Sleeper.__call__"
    assert "ValueError" in body["error"] and "Traceback" not in response.text and ".py" not in response.text
    logged = [r for r in caplog.records if "req-500" in r.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is ValueError


def test_full_queues_answer_503_with_retry_after(url: str) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return list(await asyncio.gather(*(c.post("/api/narrow", json={"delay": 1.5}) for _ in range(3))))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(503) >= 1 and statuses[0] == 200
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
            assert "overloaded" in r.json()["error"]
        else:
            assert r.json() == 1.5


def test_the_servers_in_flight_bound_answers_503_at_once() -> None:
    with running_server(graphs.slow_app, max_in_flight=2) as base, httpx.Client(base_url=base, timeout=30) as c:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as ac:
                slow = [asyncio.ensure_future(ac.post("/slow", json={"delay": 2})) for _ in range(2)]
                while metric((await ac.get("/-/metrics")).text, "graphserve_in_flight_requests", graph="slow") != 2:
                    await asyncio.sleep(0.02)
                extra = await ac.post("/slow", json={"delay": 2})
                in_flight = metric((await ac.get("/-/metrics")).text, "graphserve_in_flight_requests", graph="slow")
                assert in_flight == 2  # refused while the two slow ones still ran
                return [extra, *await asyncio.gather(*slow)]

        extra, *slow = asyncio.run(asyncio.wait_for(burst(), 30))
        assert extra.status_code == 503 and extra.headers["retry-after"] == "1"
        assert [r.status_code for r in slow] == [200, 200]
        assert metric(c.get("/-/metrics").text, "graphserve_requests_total", graph="slow", status="503") == 1


def test_graph_timeout_is_504_and_cancels_the_work(client: httpx.Client) -> None:
    before = len(graphs.FINISHED)
    response = client.post("/deadline", json={"delay": 1.0})
    assert response.status_code == 504
    assert "0.3s" in response.json()["error"]
    time.sleep(1.2)
    assert len(graphs.FINISHED) == before  # the sleep was cancelled, not left running


def test_request_header_shortens_the_deadline(client: httpx.Client) -> None:
    response = client.post("/slow", json={"delay": 2}, headers={"X-Request-Timeout-S": "0.1"})
    assert response.status_code == 504 and "0.1s" in response.json()["error"]
    # the header never extends the graph's own timeout_s
    longer = client.post("/deadline", json={"delay": 1.0}, headers={"X-Request-Timeout-S": "60"})
    assert longer.status_code == 504 and "0.3s" in longer.json()["error"]
    fast = client.post("/slow", json={"delay": 0}, headers={"X-Request-Timeout-S": "5"})
    assert fast.status_code == 200
    for bad in ("abc", "0", "-1", "nan", "inf"):
        assert client.post("/slow", json={"delay": 0}, headers={"X-Request-Timeout-S": bad}).status_code == 400


def test_server_default_timeout_applies_to_graphs_without_one() -> None:
    with running_server(graphs.echo_app, timeout_s=0.2) as base:
        # echo answers at once: the default deadline does not get in the way
        assert httpx.post(base + "/echo", json={"x": 1}).status_code == 200
    with running_server(graphs.slow_app, timeout_s=0.2) as base:
        # slow has its own timeout_s (5 s): the server default does not shorten it
        assert httpx.post(base + "/slow", json={"delay": 0.4}, timeout=30).status_code == 200


# -- concurrency -----------------------------------------------------------------------------
def test_concurrent_requests_overlap_and_all_answer(url: str, client: httpx.Client) -> None:
    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            slow = [asyncio.ensure_future(c.post("/slow", json={"delay": 1.0})) for _ in range(5)]
            echoes = await asyncio.gather(*(c.post("/echo", json={"x": i}) for i in range(40)))
            return list(echoes), list(await asyncio.gather(*slow))

    task_result: list[tuple[list[httpx.Response], list[httpx.Response]]] = []

    thread = threading.Thread(target=lambda: task_result.append(asyncio.run(run())))
    thread.start()
    overlapped = wait_for_metric(client, "graphserve_in_flight_requests", 5, graph="slow")
    thread.join(60)
    echoes, slow = task_result[0]
    assert overlapped, "the five slow requests were never in flight together"
    assert [r.json()["y"] for r in echoes] == [2.0 * i for i in range(40)]
    assert len({r.headers["x-request-id"] for r in echoes}) == 40
    assert [r.json() for r in slow] == [{"slept": 1.0}] * 5


# -- operations ----------------------------------------------------------------------------
def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/-/healthz").json() == {"status": "ok"}
    ready = client.get("/-/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and set(ready.json()["graphs"]) == {a.name for a in ALL}


def test_metrics_after_traffic(url: str, client: httpx.Client) -> None:
    for i in range(3):
        assert client.post("/batched", json={"x": i}).json() == i + 1
    client.post("/echo", json={"x": 1})
    client.post("/echo", json={"x": "bad"})

    async def batch() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return list(await asyncio.gather(*(c.post("/batched", json={"x": i}) for i in range(8))))

    assert [r.json() for r in asyncio.run(batch())] == [i + 1 for i in range(8)]
    response = client.get("/-/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE graphserve_requests_total counter" in text
    assert metric(text, "graphserve_requests_total", graph="echo", status="200") >= 1  # type: ignore[operator]
    assert metric(text, "graphserve_requests_total", graph="echo", status="422") >= 1  # type: ignore[operator]
    assert metric(text, "graphserve_requests_total", graph="batched", status="200") == 11
    assert metric(text, "graphserve_request_duration_seconds_count", graph="batched") == 11
    assert metric(text, "graphserve_node_latency_seconds_count", graph="batched", node="Batched.__call__") == 11
    sizes = metric(text, "graphserve_batch_size_sum", graph="batched", deployment="Batched", method="Batched.__call__")
    batches = metric(
        text, "graphserve_batch_size_count", graph="batched", deployment="Batched", method="Batched.__call__"
    )
    assert sizes == 11 and batches is not None and batches < 11  # some calls were batched together
    assert "# TYPE graphserve_request_duration_seconds histogram" in text
    assert metric(text, "graphserve_in_flight_requests", graph="echo") == 0
    assert metric(text, "graphserve_queue_depth", graph="narrow", deployment="Narrow") == 0
    assert metric(text, "graphserve_deployment_ongoing_requests", graph="slow", deployment="Sleeper") == 0


def test_queue_depth_shows_waiting_calls(url: str, client: httpx.Client) -> None:
    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            calls = [asyncio.ensure_future(c.post("/api/narrow", json={"delay": 1.0})) for _ in range(2)]
            seen = False
            for _ in range(200):
                text = (await c.get("/-/metrics")).text
                if metric(text, "graphserve_queue_depth", graph="narrow", deployment="Narrow") == 1:
                    seen = True
                    break
                await asyncio.sleep(0.02)
            assert seen
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(run()) == [200, 200]


def test_graphs_lists_the_plans(client: httpx.Client) -> None:
    graphs_json = client.get("/-/graphs").json()["graphs"]
    assert set(graphs_json) == {a.name for a in ALL}
    assert graphs_json["narrow"]["route"] == "/api/narrow"
    plan = graphs_json["echo"]["plan"]
    assert plan["name"] == "echo" and plan["input_schema"].endswith(":Item")
    assert {n["id"] for n in plan["nodes"]} >= {"Doubler.__call__"}
    assert client.get("/-/graphs/echo.json").json() == plan
    assert client.get("/-/graphs/missing.svg").status_code == 404
    assert client.get("/-/graphs/echo.gif").status_code == 404


def test_graph_drawings(client: httpx.Client) -> None:
    dot = client.get("/-/graphs/echo.dot")
    assert dot.status_code == 200 and dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.startswith("digraph") and "Doubler" in dot.text
    svg = client.get("/-/graphs/echo.svg")
    if shutil.which("dot") is None:  # Graphviz's program is missing: a clear 501, not a crash
        assert svg.status_code == 501 and "Graphviz" in svg.json()["error"]
        pytest.skip("Graphviz's dot is not installed")
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text and "Doubler" in svg.text
    png = client.get("/-/graphs/echo.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_a_server_without_a_renderer_answers_501() -> None:
    with running_server(graphs.echo_app, render=None) as base:
        response = httpx.get(base + "/-/graphs/echo.svg")
    assert response.status_code == 501 and "renderer" in response.json()["error"]


def test_openapi_describes_every_graph_route(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {"/echo", "/slow", "/api/narrow", "/raw", "/deadline", "/batched"}
    echo = doc["paths"]["/echo"]["post"]
    ref = echo["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(schema["properties"]) == {"x", "label"} and schema["required"] == ["x"]
    assert {"200", "400", "413", "422", "500", "503", "504"} <= set(echo["responses"])
    assert "401" not in echo["responses"] and "security" not in echo
    narrow = doc["paths"]["/api/narrow"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert narrow == {"type": "object", "properties": {"delay": {}}, "required": ["delay"]}
    assert doc["paths"]["/raw"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {}


# -- token -----------------------------------------------------------------------------------
def test_token_guards_graph_routes() -> None:
    with running_server(graphs.echo_app, token="s3cret") as base, httpx.Client(base_url=base) as c:
        missing = c.post("/echo", json={"x": 1})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.headers["x-request-id"]
        assert c.post("/echo", json={"x": 1}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/echo", json={"x": 1}, headers={"Authorization": "Basic s3cret"}).status_code == 401
        ok = c.post("/echo", json={"x": 1}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["y"] == 2.0
        assert c.post("/echo", json={"x": 1}, headers={"Authorization": "bearer s3cret"}).status_code == 200
        assert c.get("/-/healthz").status_code == 200  # probes need no token
        doc = c.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert doc["paths"]["/echo"]["post"]["security"] == [{"bearer": []}]


def test_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHSERVE_TOKEN", "from-env")
    with running_server(graphs.echo_app) as base:
        assert httpx.post(base + "/echo", json={"x": 1}).status_code == 401
        headers = {"Authorization": "Bearer from-env"}
        assert httpx.post(base + "/echo", json={"x": 1}, headers=headers).status_code == 200


# -- outputs ---------------------------------------------------------------------------------
def test_numpy_torch_and_pydantic_outputs_are_converted() -> None:
    pytest.importorskip("torch")
    from tests.graphs.tensor_outputs import tensor_app

    with running_server(tensor_app) as base:
        response = httpx.post(base + "/tensors", json={"values": [1.0, 2.0, 3.0]}, timeout=30)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["array"] == [2.0, 4.0, 6.0]
    assert out["transposed"] == [[0, 3], [1, 4], [2, 5]]
    assert out["half"] == [1.0, 2.0, 3.0]
    assert out["scalar"] == 6.0 and out["count"] == 3
    assert out["tensor"] == [[0.0, 3.0, 6.0], [9.0, 12.0, 15.0]]
    assert out["scalar_tensor"] == 6.0
    assert out["summary"] == {"n": 3, "mean": 2.0}
    assert sorted(out["tags"]) == ["a", "b"]


# -- construction ------------------------------------------------------------------------------
def test_routes_that_collide_are_refused() -> None:
    echo, raw = load_plans([graphs.echo_app, graphs.raw_app])
    raw.route_prefix = "/echo"
    with pytest.raises(GraphError, match="both want route '/echo'"):
        Ingress([GraphRuntime(echo), GraphRuntime(raw)])
    raw.route_prefix = "/-/metrics"
    with pytest.raises(GraphError, match="reserved"):
        Ingress([GraphRuntime(raw)])
    with pytest.raises(GraphError, match="max_body_bytes"):
        Ingress([GraphRuntime(echo)], max_body_bytes=0)


def test_an_output_that_is_not_json_is_500_naming_the_output(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="graphserve.ingress"), running_server(graphs.opaque_app) as base:
        response = httpx.post(base + "/opaque", json={}, headers={"X-Request-Id": "opaque-1"})
    assert response.status_code == 500
    body = response.json()
    assert body["node"] == "output" and "not JSON serializable: Opaque" in body["error"]
    assert any("opaque-1" in r.getMessage() for r in caplog.records)
