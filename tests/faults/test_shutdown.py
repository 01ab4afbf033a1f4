"""SIGTERM with requests in flight: every one answered 200, exit status 0, nothing left
running; on the Ray backend too (Ray's init replaces the server's SIGTERM handler with one
that exits at once: the server takes it back). The Ray half is in test_ray_faults.py."""

from __future__ import annotations

from bench.faults import Deployed
from bench.reliability import sigterm


def test_sigterm_on_the_local_backend_answers_every_request_in_flight(sleepy_server: Deployed) -> None:
    figures = sigterm(sleepy_server, requests=8, delay_s=1.0)
    assert figures["statuses"] == {"200": 8}, sleepy_server.log()[-3000:]
    assert figures["exit_code"] == 0
    assert figures["processes_left"] == 0
    assert figures["signal_to_exit_s"] < 10
    assert "received SIGTERM" in sleepy_server.log() and "Traceback" not in sleepy_server.log()
