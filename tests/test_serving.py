"""``gs.serve``, ``graphserve deploy`` and ``graphserve call``: starting, failing to start, shutting down."""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import graphserve as gs
from graphserve.cli import call_command, deploy_command
from graphserve.errors import DeploymentStartError, GraphError
from graphserve.serving import load_plans, serve
from tests.graphs import ingress_graphs as graphs
from tests.serving_utils import running_server

ROOT = Path(__file__).resolve().parent.parent


def refused(url: str) -> bool:
    try:
        httpx.get(url + "/-/healthz", timeout=2)
    except httpx.ConnectError:
        return True
    return False


# -- gs.serve ------------------------------------------------------------------------------
def test_serve_in_the_background_on_a_free_port() -> None:
    assert gs.serve is serve
    server = serve(graphs.echo_app, port=0, blocking=False)
    try:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert server.routes == {"echo": f"{server.url}/echo"}
        server.wait_ready(1)  # already ready: returns at once
        assert httpx.get(server.url + "/-/ready").json()["status"] == "ready"
        assert httpx.post(server.routes["echo"], json={"x": 4}).json() == {"y": 8.0, "label": "a"}
    finally:
        server.shutdown()
    assert refused(server.url)


def test_serve_takes_import_strings_and_plan_files(tmp_path: Path) -> None:
    (plan,) = load_plans(graphs.slow_app)
    path = tmp_path / "slow.json"
    path.write_text(plan.to_json())
    with running_server(
        ["tests.graphs.ingress_graphs:echo_app", str(path), plan.model_copy(update={"name": "p"})]
    ) as url:
        assert httpx.post(url + "/echo", json={"x": 1}).json()["y"] == 2.0
        assert httpx.post(url + "/slow", json={"delay": 0}).json() == {"slept": 0.0}
        assert httpx.post(url + "/p", json={"delay": 0}).json() == {"slept": 0.0}


def test_a_failing_constructor_stops_the_start_naming_the_deployment() -> None:
    with pytest.raises(DeploymentStartError, match=r"'Broken'.*weights missing") as info:
        serve([graphs.echo_app, graphs.broken_app], port=0, blocking=False, startup_timeout_s=60)
    assert info.value.deployment == "Broken"


def test_the_port_is_free_again_after_a_failed_start() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeploymentStartError):
        serve(graphs.broken_app, port=port, blocking=False)
    with running_server(graphs.echo_app, port=port) as url:
        assert url.endswith(f":{port}")


def test_a_busy_port_is_a_clear_error() -> None:
    with running_server(graphs.echo_app) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(GraphError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(graphs.echo_app, port=port, blocking=False)


def test_unknown_options_are_refused_with_the_list() -> None:
    with pytest.raises(GraphError, match=r"(?s)unknown option\(s\) \['max_body'\].*max_body_bytes"):
        serve(graphs.echo_app, port=0, blocking=False, max_body=10)


def test_shutdown_waits_for_in_flight_requests() -> None:
    server = serve(graphs.slow_app, port=0, blocking=False)
    results: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: results.append(httpx.post(server.url + "/slow", json={"delay": 1.0}, timeout=30))
    )
    worker.start()
    for _ in range(200):
        if 'graphserve_in_flight_requests{graph="slow"} 1' in httpx.get(server.url + "/-/metrics").text:
            break
        time.sleep(0.02)
    server.shutdown()
    worker.join(30)
    assert [r.status_code for r in results] == [200]
    assert refused(server.url)


# -- in a subprocess: signals ---------------------------------------------------------------------
DEPLOY_SCRIPT = """
import argparse, sys
from graphserve.cli import deploy_command
sys.exit(deploy_command(argparse.Namespace(
    targets=sys.argv[1:], host="127.0.0.1", port=0, backend="local", token=None,
    timeout_s=None, max_body_bytes=None, cluster=None, shutdown_timeout_s={shutdown})))
"""


class Deployed:
    """A server in a subprocess; its stdout lines arrive on a queue (bounded waits only)."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()
        self.url = self._ready_url()

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def _ready_url(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "ready at " in line:
                return line.split("ready at ", 1)[1].split()[0]
        self.proc.kill()
        raise AssertionError("the server did not get ready:\n" + "".join(self.stderr))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def deployed() -> Iterator[list[Deployed]]:
    started: list[Deployed] = []
    yield started
    for d in started:
        d.close()


def in_flight(url: str, graph: str) -> float:
    for line in httpx.get(url + "/-/metrics").text.splitlines():
        if line.startswith(f'graphserve_in_flight_requests{{graph="{graph}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _slow_requests_then(d: Deployed, count: int, delay: float, sig: int) -> list[Any]:
    async with httpx.AsyncClient(base_url=d.url, timeout=60) as client:
        calls = [asyncio.ensure_future(client.post("/slow", json={"delay": delay})) for _ in range(count)]
        for _ in range(500):
            if in_flight(d.url, "slow") == count:
                break
            await asyncio.sleep(0.02)
        assert in_flight(d.url, "slow") == count
        d.proc.send_signal(sig)
        return list(await asyncio.gather(*calls, return_exceptions=True))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_requests_then_exits_cleanly(deployed: list[Deployed], sig: int) -> None:
    script = DEPLOY_SCRIPT.format(shutdown=30)
    d = Deployed([sys.executable, "-c", script, "tests.graphs.ingress_graphs:slow_app"])
    deployed.append(d)
    responses = asyncio.run(_slow_requests_then(d, count=6, delay=1.5, sig=sig))
    assert [getattr(r, "status_code", r) for r in responses] == [200] * 6  # none lost
    assert [r.json() for r in responses] == [{"slept": 1.5}] * 6
    assert d.proc.wait(60) == 0
    assert refused(d.url)
    log = "".join(d.stderr)
    assert f"received {signal.Signals(sig).name}" in log and "Traceback" not in log


def test_shutdown_is_bounded_for_requests_that_take_too_long(deployed: list[Deployed]) -> None:
    d = Deployed([sys.executable, "-c", DEPLOY_SCRIPT.format(shutdown=1), "tests.graphs.ingress_graphs:slow_app"])
    deployed.append(d)
    (response,) = asyncio.run(_slow_requests_then(d, count=1, delay=25, sig=signal.SIGTERM))
    assert d.proc.wait(20) == 0  # long before the 25 s request could have finished
    assert response.status_code == 503  # cancelled after the 1 s bound, and told so
    assert "shutting down" in response.json()["error"] and response.headers["retry-after"] == "1"


# -- graphserve deploy / call ---------------------------------------------------------------------
def test_deploy_reports_a_failing_constructor(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(targets=["tests.graphs.ingress_graphs:broken_app"], host="127.0.0.1", port=0)
    assert deploy_command(args) == 1
    assert "deployment 'Broken' failed to start" in capsys.readouterr().err


def test_deploy_reports_a_target_that_does_not_load(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(targets=["tests.graphs.ingress_graphs:nothing"], host="127.0.0.1", port=0)
    assert deploy_command(args) == 1
    assert "has no attribute 'nothing'" in capsys.readouterr().err


def call(capsys: pytest.CaptureFixture[str], target: str, body: str | None, **kw: Any) -> tuple[int, str, str]:
    args = argparse.Namespace(
        target=target, body=body, timeout_s=kw.pop("timeout_s", None), header=kw.pop("header", [])
    )
    code = call_command(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_call_runs_a_graph_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, "tests.graphs.ingress_graphs:echo_app", '{"x": 3}')
    assert code == 0 and out.strip() == '{"y":6.0,"label":"a"}'
    code, _, err = call(capsys, "tests.graphs.ingress_graphs:echo_app", '{"x": "three"}')
    assert code == 1 and err.startswith("error: 422:") and "float_parsing" in err
    code, _, err = call(capsys, "tests.graphs.ingress_graphs:echo_app", "{x")
    assert code == 2 and "not JSON" in err


def test_call_posts_to_a_url(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server([graphs.echo_app, graphs.slow_app], token="tok") as url:
        code, _, err = call(capsys, url + "/echo", '{"x": 1}')
        assert code == 1 and "HTTP 401" in err
        code, out, _ = call(capsys, url + "/echo", '{"x": 1}', header=["Authorization: Bearer tok"])
        assert code == 0 and out.strip() == '{"y":2.0,"label":"a"}'
        monkeypatch.setenv("GRAPHSERVE_TOKEN", "tok")
        code, out, _ = call(capsys, url + "/echo", '{"x": 2}')
        assert code == 0 and '"y":4.0' in out
        code, _, err = call(capsys, url + "/slow", '{"delay": 2}', timeout_s=0.1)
        assert code == 1 and "HTTP 504" in err
        code, _, err = call(capsys, url + "/echo", "{}", header=["no-colon"])
        assert code == 2 and "Name: value" in err
    code, _, err = call(capsys, url + "/echo", "{}")
    assert code == 1 and "cannot reach" in err


def test_call_reads_the_body_from_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"x": 5}'))
    code, out, _ = call(capsys, "tests.graphs.ingress_graphs:echo_app", "-")
    assert code == 0 and '"y":10.0' in out


CLI = "import sys; from graphserve.cli import main; sys.exit(main())"


def test_graphserve_deploy_serves_and_stops_on_sigterm(deployed: list[Deployed]) -> None:
    argv = [sys.executable, "-c", CLI, "deploy", "tests.graphs.ingress_graphs:echo_app", "--port", "0"]
    d = Deployed([*argv, "--token", "t0k", "--max-body-bytes", "100", "--cluster", "none"])
    deployed.append(d)
    headers = {"Authorization": "Bearer t0k"}
    assert httpx.post(d.url + "/echo", json={"x": 2}, headers=headers).json() == {"y": 4.0, "label": "a"}
    assert httpx.post(d.url + "/echo", json={"x": 2}).status_code == 401
    assert httpx.post(d.url + "/echo", json={"x": 2, "label": "a" * 200}, headers=headers).status_code == 413
    assert d.stop(signal.SIGTERM) == 0
    assert refused(d.url)


def test_graphserve_call_from_the_shell() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with running_server(graphs.echo_app) as url:
        ok = subprocess.run(
            [sys.executable, "-c", CLI, "call", url + "/echo", '{"x": 1.5}'],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        bad = subprocess.run(
            [sys.executable, "-c", CLI, "call", url + "/echo", '{"x": []}'],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert ok.returncode == 0 and ok.stdout.strip() == '{"y":3.0,"label":"a"}'
    assert bad.returncode == 1 and "HTTP 422" in bad.stderr and bad.stdout == ""
