"""Slow clients cannot starve the server: twelve clients trickling a body (the graph's
max_in_flight is 12) and hundreds trickling headers on a server limited to 256 file
descriptors, next to normal traffic."""

from __future__ import annotations

import pytest

from bench.reliability import CRITERIA, slow_clients

pytestmark = pytest.mark.slow


def test_slow_header_and_slow_body_clients_do_not_starve_normal_traffic() -> None:
    figures = slow_clients()
    assert figures["baseline_success"] == 1.0, figures
    drop = CRITERIA["slow_clients_success_drop"]
    assert figures["under_attack_success"] >= figures["baseline_success"] - drop, figures
    assert figures["open_connections_seen"] >= 64, figures  # the slow clients were really connected
    # slow bodies are cut by the body timeout with a 408; slow headers by the header timeout or evicted
    assert figures["slow_body_answers"].get("408", 0) >= figures["slow_body_clients"], figures
    assert figures["server_closed"].get("header_timeout", 0) + figures["server_closed"].get("evicted", 0) > 0
    assert figures["slow_header_longest_s"] <= figures["header_timeout_s"] + 2, figures
