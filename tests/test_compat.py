"""Ray Serve compatibility (``graphserve.compat``, and ``gs.run`` as ``serve.run``).

Ports of Ray Serve's batching, composition, ensemble and MLflow registry patterns,
written as Ray Serve code with only the import changed (``tests/graphs/rayserve_*``),
each served over real HTTP on 127.0.0.1 at a free port and called with httpx.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import graphserve as serve
from graphserve.compat import GraphWarning
from graphserve.errors import GraphError, RouteConflictError
from tests.graphs import rayserve_batching as rb
from tests.graphs import rayserve_composition as rc
from tests.graphs import rayserve_ensemble as re_
from tests.graphs import rayserve_outputs as ro
from tests.graphs import rayserve_v1 as rv1
from tests.serving_utils import running_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def base_url() -> Iterator[str]:
    """Ray Serve's way to choose the port: serve.start(http_options=...); serve.shutdown() after."""
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
    assert not _listening(port)


# -- the patterns --------------------------------------------------------------------------
async def _gather_get(urls: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return list(await asyncio.gather(*(client.get(url) for url in urls)))


def test_batching_gathers_concurrent_http_requests(base_url: str) -> None:
    handle = serve.run(rb.app)  # routed by @serve.deployment(route_prefix="/adder")
    responses = asyncio.run(_gather_get([f"{base_url}/adder?number={i}" for i in range(16)]))
    assert [r.status_code for r in responses] == [200] * 16
    assert [r.json() for r in responses] == [i + 1 for i in range(16)]
    sizes = handle.sizes.remote().result(timeout_s=30)
    assert sum(sizes) == 16 and max(sizes) <= 4
    assert max(sizes) > 1  # 16 requests at once, 0.5 s to fill a batch: some were gathered
    assert handle.handle_batch.remote(41).result(timeout_s=30) == 42  # a handle to the batched method


def test_bare_batch_decorator(base_url: str) -> None:
    handle = serve.run(rb.bare_app, route_prefix="/double")

    async def post_all() -> list[Any]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.post(f"{base_url}/double", json={"x": i}) for i in range(8)]
            return [r.json() for r in await asyncio.gather(*calls)]

    assert asyncio.run(post_all()) == [2 * i for i in range(8)]
    sizes = handle.sizes.remote().result(timeout_s=30)
    assert sum(sizes) == 8 and max(sizes) <= 10  # the bare decorator's default max_batch_size


def test_composition_calls_model_two_only_above_half(base_url: str) -> None:
    serve.run(rc.app, route_prefix="/composed")
    answers = []
    for data in ["0.2", "0.9", "0.7", "0.1", "0.5"]:
        response = httpx.request("GET", f"{base_url}/composed", content=data)  # GET with a body, as the docs do
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert [a["model_used"] for a in answers] == [1, 2, 2, 1, 1]
    assert answers[1] == {"model_used": 2, "score": 0.9, "result": 18.0}  # the keyword argument passed through
    one = serve.get_deployment_handle("ModelOne")
    two = serve.get_deployment_handle("ModelTwo", app_name="default")  # Ray Serve's name for an unnamed app
    assert one.count.remote().result(timeout_s=30) == 5
    assert two.options(method_name="count").remote().result(timeout_s=30) == 2


def test_ensemble_waits_on_handles_that_run_together(base_url: str) -> None:
    re_.RUNS.clear()
    serve.run(re_.app, route_prefix="/ensemble")
    response = httpx.post(f"{base_url}/ensemble", json={"x": 2.0}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": [2.0, 4.0, 6.0], "mean": 4.0, "pending": 0}  # numpy -> JSON
    assert sorted(w for w, _, _ in re_.RUNS) == [1.0, 2.0, 3.0]
    assert max(start for _, start, _ in re_.RUNS) < min(end for _, _, end in re_.RUNS)  # all three overlapped


def test_handles_are_futures(base_url: str) -> None:
    serve.run(rc.app, route_prefix="/composed")
    two = serve.get_deployment_handle("ModelTwo")

    async def use() -> tuple[list[float], list[float], float]:
        first = two.remote(b"0.1")  # starts now
        gathered = await asyncio.gather(two.remote(b"0.2"), two.remote(b"0.3", scale=2.0))
        done, pending = await asyncio.wait([two.remote(b"0.4"), two.remote(b"0.5")])
        assert not pending
        return list(gathered), sorted([await r for r in done]), await first

    gathered, waited, first = asyncio.run(use())
    assert gathered == [2.0, 6.0] and waited == [4.0, 5.0] and first == 1.0
    assert two.remote(b"0.6").result(timeout_s=30) == 6.0  # from blocking code
    assert two.count.remote().result(timeout_s=30) == 6


def test_request_and_return_values(base_url: str) -> None:
    serve.run(ro.app, route_prefix="/out")
    url = f"{base_url}/out"
    text = httpx.get(url, params={"kind": "text"})
    assert text.text == "hello" and text.headers["content-type"].startswith("text/plain")
    raw = httpx.get(url, params={"kind": "bytes"})
    assert raw.content == b"\x00\x01raw" and raw.headers["content-type"] == "application/octet-stream"
    teapot = httpx.get(url, params={"kind": "response"})
    assert (teapot.status_code, teapot.text, teapot.headers["x-from"]) == (418, "teapot", "app")
    assert teapot.headers["x-request-id"]
    created = httpx.post(url, params={"kind": "json_response"})
    assert created.status_code == 201 and created.json() == {"ok": True}
    assert httpx.get(url, params={"kind": "array"}).json() == [0.0, 1.5, 3.0]
    assert httpx.get(url, params={"kind": "scalar"}).json() == 2.5
    assert httpx.get(url, params={"kind": "frame"}).json() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert httpx.get(url, params={"kind": "series"}).json() == [3, 4]
    other = httpx.put(url, params={"kind": "echo"}, headers={"X-Custom": "v"})  # the app sees any method
    assert other.json() == {"method": "PUT", "headers": "v"}


# -- the 1.x API ---------------------------------------------------------------------------
def _train_iris(tmp_path: Path) -> tuple[str, str, Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    model_path, label_path = tmp_path / "iris_model.pkl", tmp_path / "iris_labels.json"
    model_path.write_bytes(pickle.dumps(model))
    label_path.write_text(json.dumps([str(name) for name in iris.target_names]))
    return str(model_path), str(label_path), model, iris


def test_v1_regressor_deploy_get_handle_and_options(base_url: str, tmp_path: Path) -> None:
    model_path, label_path, model, iris = _train_iris(tmp_path)
    rv1.BoostingModel.deploy(model_path, label_path)
    assert rv1.BoostingModel.url == f"{base_url}/regressor"
    names = [str(n) for n in iris.target_names]
    for row in iris.data[::25]:
        sample = dict(zip(["sepal length", "sepal width", "petal length", "petal width"], map(float, row), strict=True))
        response = httpx.request("GET", f"{base_url}/regressor", json=sample)  # the docs' requests.get(url, json=)
        assert response.json() == {"result": names[int(model.predict([row])[0])]}
    assert serve.get_deployment("BoostingModel") is rv1.BoostingModel
    rv1.BoostingModel.options(name="regressor_v2", route_prefix="/regressor/v2").deploy(model_path, label_path)
    assert set(serve.list_deployments()) == {"BoostingModel", "regressor_v2"}
    setosa = {"sepal length": 5.1, "sepal width": 3.5, "petal length": 1.4, "petal width": 0.2}
    assert httpx.post(f"{base_url}/regressor/v2", json=setosa).json() == {"result": "setosa"}
    handle = serve.get_deployment("regressor_v2").get_handle()
    assert handle.deployment_name == "regressor_v2"
    serve.get_deployment("regressor_v2").delete()
    # routes match by prefix, as Ray Serve's: /regressor answers /regressor/v2 once v2 is gone
    assert httpx.post(f"{base_url}/regressor/v2", json=setosa).json() == {"result": "setosa"}
    assert httpx.post(f"{base_url}/regressor", json=setosa).json() == {"result": "setosa"}


def test_v1_composition_through_get_handle(base_url: str) -> None:
    rv1.CALLS.update(model_one=0, model_two=0)
    rv1.model_one.deploy()
    rv1.model_two.deploy()
    rv1.ComposedModel.deploy()
    used = [httpx.request("GET", f"{base_url}/composed", content=d).json()["model_used"] for d in ("0.9", "0.1", "0.6")]
    assert used == [2, 1, 2]
    assert rv1.CALLS == {"model_one": 3, "model_two": 2}
    assert rv1.model_one.url == f"{base_url}/model_one"  # 1.x's default route: /<name>
    assert rv1.model_two.get_handle().remote(data="x").result(timeout_s=30) == "x"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning:mlflow")
def test_mlflow_registry_pattern_reads_csv(base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from tests.graphs import rayserve_registry as rr

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        frame = load_iris(as_frame=True).frame.drop(columns="target")
        target = load_iris().target
        model = LogisticRegression(max_iter=500).fit(frame, target)
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="model", registered_model_name="iris", pip_requirements=[])
        rr.MLflowDeployment.options(name="iris_classifier", route_prefix="/iris").deploy("models:/iris/1")
        sample = frame.iloc[::30]
        response = httpx.post(f"{base_url}/iris", content=sample.to_csv(index=False), timeout=60)
        assert response.status_code == 200, response.text
        assert response.json() == model.predict(sample).tolist()
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


# -- serving semantics ---------------------------------------------------------------------
def test_unsupported_options_warn_once_each_and_still_serve(base_url: str) -> None:
    with pytest.warns(GraphWarning) as record:
        serve.run(ro.tolerant_app, route_prefix="/tolerant")
    messages = [str(w.message) for w in record if issubclass(w.category, GraphWarning)]
    for option in ("autoscaling_config", "runtime_env", "health_check_period_s"):
        assert sum(option in m for m in messages) == 1, messages
    assert not any("user_config" in m for m in messages), messages  # applied through reconfigure()
    assert all(m.startswith("GS117") for m in messages)
    assert httpx.post(f"{base_url}/tolerant").json() == {"ok": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphWarning)  # shown once per process: not again
        serve.run(ro.tolerant_app, route_prefix="/tolerant")  # same name: replaces the running app
    assert httpx.post(f"{base_url}/tolerant").json() == {"ok": True}


def test_same_name_replaces_and_a_taken_route_is_an_error(base_url: str) -> None:
    first = serve.run(ro.app, route_prefix="/a", name="outputs")
    second = serve.run(ro.app, route_prefix="/b", name="outputs")  # same app name: the old one is replaced
    assert httpx.get(f"{base_url}/a", params={"kind": "text"}).status_code == 404
    assert httpx.get(f"{base_url}/b", params={"kind": "text"}).text == "hello"
    with pytest.raises(GraphError, match="was shut down"):
        first.remote()
    with pytest.raises(RouteConflictError, match=r"both want route '/b'.*route_prefix") as conflict:
        serve.run(rb.bare_app, route_prefix="/b")  # another app at its route: refused, as Ray Serve does
    assert conflict.value.path == "/b"
    assert second.url == f"{base_url}/b"
    assert serve.get_app_handle("outputs") is second
    serve.delete("outputs")
    assert httpx.get(f"{base_url}/b", params={"kind": "text"}).status_code == 404
    with pytest.raises(GraphError, match="Application 'outputs' does not exist"):
        serve.get_app_handle("outputs")


def test_run_serves_http_by_default_and_shutdown_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _free_port()
    monkeypatch.setenv("GRAPHSERVE_HTTP_PORT", str(port))
    try:
        handle = serve.run(rc.app)  # no serve.start(): the first run starts the server, at "/"
        assert handle.url == f"http://127.0.0.1:{port}"
        assert httpx.post(handle.url + "/", content="0.8").json()["model_used"] == 2
        handle.shutdown()  # its last app gone, a server the run started stops
        assert not _listening(port)
        serve.run(rc.app, name="again")
        assert _listening(port)
    finally:
        serve.shutdown()
    assert not _listening(port)


def test_run_without_http_and_with_the_graph_api() -> None:
    with serve.run(rc.app, http=False) as handle:
        assert handle.url is None
        assert handle.deployment("ModelOne").remote(b"0.25").result(timeout_s=30) == 0.25
    with serve.InputNode() as inp:
        graph = serve.graph(rc.ModelTwo.bind().__call__.bind(inp), name="graph_app")
    with serve.run(graph, _local_testing_mode=True) as handle:
        assert handle.remote(b"0.5").result(timeout_s=30) == 5.0
        assert handle.call(b"0.2") == 2.0
        with pytest.raises(AttributeError, match=r"handle\.deployment"):
            handle.count  # noqa: B018 - a graph has no ingress deployment to pick methods from
        with pytest.raises(GraphError, match="InputNode"):
            handle.options(method_name="count")


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(GraphError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            serve.start(http_options={"port": port})
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GRAPHSERVE_HTTP_PORT", str(port))
            with pytest.raises(GraphError, match="cannot listen"):
                serve.run(ro.app)
            patch.setenv("GRAPHSERVE_HTTP_PORT", "eighty")
            with pytest.raises(GraphError, match="not a port number"):
                serve.run(ro.app)
    serve.shutdown()


def test_graphserve_deploy_serves_a_ray_serve_app() -> None:
    """The path of `graphserve deploy tests.graphs.rayserve_composition:app`."""
    with running_server("tests.graphs.rayserve_composition:app") as base:
        assert httpx.post(base + "/", content="0.9").json()["model_used"] == 2
        assert httpx.request("GET", base + "/Driver", content="0.3").json() == {"model_used": 1, "score": 0.3}


def test_fastapi_ingress_is_refused_clearly() -> None:
    with pytest.raises(GraphError, match="not supported"):
        serve.ingress(object())


# -- the compiler's side -------------------------------------------------------------------
def test_plans_say_who_takes_the_request_and_where_it_is_routed(tmp_path: Path) -> None:
    model_path, label_path, _, _ = _train_iris(tmp_path)
    plan = serve.build(rv1.BoostingModel.bind(model_path, label_path))
    assert (plan.raw_ingress, plan.http_request, plan.route_prefix) == (True, True, "/regressor")  # unannotated
    assert serve.build(rb.app).http_request  # annotated `request: Request`
    assert serve.build(ro.app).http_request  # a function deployment
    assert not serve.build(rc.ModelOne.bind()).http_request  # `data: bytes` gets the body itself
    with serve.InputNode() as inp:
        assert serve.build(serve.graph(rb.BatchAdder.bind().__call__.bind(inp))).http_request
        both = serve.graph([rb.BatchAdder.bind().__call__.bind(inp), rc.ModelOne.bind().__call__.bind(inp)])
    with pytest.raises(serve.GraphValidationError, match=r"GS104.*HTTP request"):
        serve.build(both)
