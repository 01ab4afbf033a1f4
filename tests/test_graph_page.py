"""The live graph page's routes over HTTP (runtime/graph_page.py, the ingress's hooks): a real
uvicorn server on 127.0.0.1 and a real client. The browser side is tests/test_page_browser.py."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from graphserve.cli import _announce
from graphserve.compiler.render import FIGURE_LINES
from graphserve.serving import load_plans, serve
from tests.graphs import ingress_graphs, page_graphs
from tests.serving_utils import running_server


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server(page_graphs.make_app()) as base:
        yield base


def test_the_page_and_its_files_are_served_from_the_package(url: str) -> None:
    page = httpx.get(url + "/-/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/-/static/page.js" in page.text and "/-/static/page.css" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: every file comes from this server
    script = httpx.get(url + "/-/static/page.js")
    assert script.headers["content-type"].startswith("text/javascript") and "EventSource" in script.text
    assert httpx.get(url + "/-/static/page.css").headers["content-type"].startswith("text/css")
    assert httpx.get(url + "/-/static/secrets.txt").status_code == 404
    assert sum(len(httpx.get(url + f).content) for f in ("/-/", "/-/static/page.js", "/-/static/page.css")) < 40_000


def test_a_browser_at_slash_gets_the_page_and_a_client_gets_the_graph(url: str) -> None:
    browser = httpx.get(url + "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 307 and browser.headers["location"] == "/-/"
    graph = httpx.post(url + "/", json={"text": "tiny"})
    assert graph.status_code == 200 and graph.json() == {"path": "short", "n": 4}
    with_body = httpx.request("GET", url + "/", json={"text": "tiny"}, headers={"Accept": "text/html"})
    assert with_body.status_code == 200  # a GET with a body is still a graph request


def test_slash_without_a_graph_sends_browsers_to_the_page_and_tells_clients_the_routes() -> None:
    apps = [ingress_graphs.echo_app, page_graphs.make_app()]
    with running_server(apps) as base:
        assert httpx.get(base + "/", headers={"Accept": "text/html"}).headers["location"] == "/-/"
        answer = httpx.get(base + "/")
        assert answer.status_code == 404 and "/-/" in answer.json()["error"] and "page_demo" in answer.json()["error"]


def test_stats_count_every_call_and_errors_on_the_failing_node(url: str) -> None:
    before = httpx.get(url + "/-/stats").json()["graphs"]["page_demo"]["nodes"]
    with httpx.Client(base_url=url) as client:
        for _ in range(6):
            assert client.post("/", json={"text": "a long text"}).status_code == 200
        failed = client.post("/", json={"text": "a long text", "fail": True}, headers={"X-Request-Id": "req-fail-1"})
    assert failed.status_code == 500 and failed.json()["node"] == "long_path"
    stats = httpx.get(url + "/-/stats").json()
    graph = stats["graphs"]["page_demo"]
    nodes = graph["nodes"]
    assert nodes["Classifier.__call__"]["calls"] - before["Classifier.__call__"]["calls"] == 7
    assert nodes["long_path"]["errors"] - before["long_path"]["errors"] == 1
    assert nodes["short_path"]["calls"] == before["short_path"]["calls"]  # the arm not taken never ran
    assert nodes["Embed.__call__"]["batch_mean"] >= 1
    assert graph["deployments"]["long_path"]["replicas"] == 2
    assert graph["deployments"]["Embed"]["batching"]["__call__"]["max_batch_size"] == 4  # read from the batcher
    error = graph["errors"][0]
    assert error["request_id"] == "req-fail-1" and error["node"] == "long_path" and error["status"] == 500
    # what the 500 said: the node and the exception's type, not its text (that is in the log)
    assert error["message"] == failed.json()["error"] and "ValueError" in error["message"]
    assert "asked to fail" not in error["message"]
    metrics = httpx.get(url + "/-/metrics").text
    assert 'graphserve_node_errors_total{graph="page_demo",node="long_path"}' in metrics


def test_events_stream_the_same_figures(url: str) -> None:
    seen: list[str] = []
    with httpx.stream("GET", url + "/-/events", timeout=10) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(line[6:])
            if len(seen) == 2:
                break
    assert all('"page_demo"' in data and '"nodes"' in data for data in seen)


def test_an_open_event_stream_does_not_hold_up_shutdown() -> None:
    server = serve(page_graphs.make_app(), port=0, blocking=False, shutdown_timeout_s=30)
    connected = threading.Event()

    def listen() -> None:
        try:
            with httpx.stream("GET", server.url + "/-/events", timeout=60) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        connected.set()
        except httpx.HTTPError:
            pass

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    started = time.monotonic()
    server.shutdown(timeout=40)
    assert time.monotonic() - started < 10  # not the 30 s graceful bound
    listener.join(10)
    assert not listener.is_alive()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make setup)")
def test_the_page_drawing_has_stable_ids_and_room_for_figures(url: str) -> None:
    (plan,) = load_plans(page_graphs.make_app(), cluster=None)
    plain = httpx.get(url + "/-/graphs/page_demo.svg").text
    live = httpx.get(url + "/-/graphs/page_demo.svg?figures=1").text
    for node in plan.nodes:
        assert f'id="node:{node.id}"' in live and f'id="node:{node.id}"' in plain
    assert 'id="edge:Classifier.__call__&#45;&gt;switch"' in live
    assert FIGURE_LINES[0] in live and FIGURE_LINES[0] not in plain
    assert live.count(FIGURE_LINES[-1]) == sum(1 for n in plan.nodes if n.kind == "call" and n.deployment)


def test_the_start_up_message_links_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(page_graphs.make_app(), on_ready=_announce) as base:
        pass
    out = capsys.readouterr().out
    assert f"{base}/-/" in out and "see the graphs run" in out
