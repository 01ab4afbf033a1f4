"""SIGTERM with requests in flight: every one answered 200, exit status 0, nothing left
running; on the Ray backend too (Ray's init replaces the server's SIGTERM handler with one
that exits at once: the server takes it back). The Ray half is in test_ray_faults.py."""

from __future__ import annotations

from bench.faults import Deployed
from bench.reliability import GRAPHS, sigterm


def test_sigterm_on_the_local_backend_answers_every_request_in_flight(sleepy_server: Deployed) -> None:
    figures = sigterm(sleepy_server, requests=8, delay_s=1.0)
    assert figures["statuses"] == {"200": 8}, sleepy_server.log()[-3000:]
    assert figures["exit_code"] == 0
    assert figures["processes_left"] == 0
    assert figures["signal_to_exit_s"] < 10
    assert "received SIGTERM" in sleepy_server.log() and "Traceback" not in sleepy_server.log()


def test_a_sigterm_handler_a_deployment_installed_is_taken_back() -> None:
    # what ray.init does to the server, without Ray: the constructor's handler would exit 15 at once
    with Deployed([f"{GRAPHS}:grabby"]) as server:
        figures = sigterm(server, requests=4, delay_s=1.0, graph="grabby")
        assert figures["statuses"] == {"200": 4} and figures["exit_code"] == 0, server.log()[-3000:]
        assert "SIGTERM's handler was replaced" in server.log()
