"""Faults on the Ray backend, on one server that starts its own Ray instance: a replica's
process killed with SIGKILL under load, then SIGTERM with requests in flight (the server
must drain, stop its actors, exit 0 and leave no Ray process behind), and /-/ready when the
cluster itself is gone."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bench.faults import Deployed, command_line, wait_until
from bench.reliability import CRITERIA, GRAPHS, replica_kill, sigterm, start_ray_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_server() -> Iterator[Deployed]:
    server = start_ray_server()
    try:
        yield server
    finally:
        server.close()


def test_kill_9_of_a_replica_under_load_fails_only_its_calls_and_recovers(ray_server: Deployed) -> None:
    figures = replica_kill(ray_server)
    assert figures["hung"] == 0 and figures["slowest_ms"] < 15_000, figures
    # only calls that were on the replica when it died fail (running, or sent to it in the moment
    # before the server could know), at most the replica's own places; none once the server knew
    assert figures["failed_after_noticed"] == 0, figures
    assert figures["failed"] == figures["failed_in_flight_at_kill"] + figures["failed_sent_before_noticed"], figures
    assert figures["failed"] <= figures["max_ongoing_per_replica"], figures
    assert set(figures["failure_types"]) <= {"ActorDiedError", "ActorUnavailableError", "RayActorError"}, figures
    assert figures["recovery_s"] <= CRITERIA["replica_recovery_s"], figures
    assert figures["replicas_answering_after"] == 2, figures
    assert set(figures["statuses"]) <= {"200", "500"}, figures


def test_sigterm_on_ray_answers_every_request_in_flight_and_leaves_no_ray_process(ray_server: Deployed) -> None:
    figures = sigterm(ray_server, requests=8, delay_s=1.5)
    assert figures["statuses"] == {"200": 8}, ray_server.log()[-3000:]
    assert figures["exit_code"] == 0
    assert figures["processes_started"] >= 3  # GCS, raylet, workers: Ray was really started here
    assert figures["processes_left"] == 0
    log = ray_server.log()
    assert "takes it back" in log and "received SIGTERM" in log


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ready_turns_503_when_the_ray_cluster_is_gone() -> None:
    # Ray's GCS declares a node dead after failed health checks: made quick here
    env = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "2"}
    with Deployed([f"{GRAPHS}:replicated"], backend="ray", env=env, ready_timeout_s=240) as server:
        assert _get(server.url + "/-/ready")[0] == 200
        raylets = [pid for pid in server.tree() if "/raylet" in command_line(pid).split(" ")[0]]
        assert len(raylets) == 1
        os.kill(raylets[0], signal.SIGKILL)

        def not_ready() -> bytes | None:
            status, body = _get(server.url + "/-/ready")
            return body if status == 503 else None

        body = json.loads(wait_until(not_ready, 60, "/-/ready to answer 503"))
        assert body["graphs"] == {"replicated": False}
        # whichever Ray notices first: the replicas' pings fail, or the GCS declares the node dead
        reason = body["problems"]["replicated"]
        assert "no live replica" in reason or "Ray cluster" in reason, reason
