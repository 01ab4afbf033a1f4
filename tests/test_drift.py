"""Drift from a plan (runtime/drift.py) with a fake clock: a rate or p99 that leaves the plan's
for a whole window is drift (logged, counted), a short burst is not, and it ends only after a
window back inside; and ``graphserve build --from-metrics URL`` re-planning from a real server."""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from graphserve import cli
from graphserve.compiler import compile_app
from graphserve.plan import Plan, PredictionPlan, SLOPlan
from graphserve.runtime.drift import DriftMonitor
from tests.graphs import slo_graphs as g
from tests.serving_utils import running_server
from tests.test_ingress import metric, wait_for_metric
from tests.test_slo import _profile

WINDOW = 10.0


def _plan(rate: float = 100.0, p99_s: float = 0.050, predicted_p99_s: float = 0.030) -> Plan:
    plan = compile_app(g.pipeline)
    plan.slo = SLOPlan(p99_s=p99_s, rate_rps=rate)
    plan.prediction = PredictionPlan(
        rate_rps=rate, p50_s=0.01, p99_s=predicted_p99_s, throughput_rps=rate, rejected=0, requests=1000
    )
    return plan


def _traffic(monitor: DriftMonitor, clock: list[float], rate: float, seconds: float, latency_s: float) -> None:
    """Requests at ``rate`` for ``seconds`` of fake time, each answered after ``latency_s``."""
    for _ in range(round(rate * seconds)):
        clock[0] += 1 / rate
        monitor.request(clock[0], latency_s)


def test_a_rate_outside_the_plan_for_a_whole_window_is_drift_and_is_logged(caplog):
    monitor, clock = DriftMonitor(_plan(rate=100), window_s=WINDOW), [0.0]
    _traffic(monitor, clock, 100, 3 * WINDOW, 0.010)  # as planned
    assert not monitor.states["rate"].active and monitor.rate == pytest.approx(100, rel=0.02)
    with caplog.at_level(logging.INFO, logger="graphserve.drift"):
        _traffic(monitor, clock, 200, 0.9 * WINDOW, 0.010)  # double: measured at once, not yet held a window
        assert not monitor.states["rate"].active
        _traffic(monitor, clock, 200, 0.5 * WINDOW, 0.010)
        assert monitor.states["rate"].active and monitor.states["rate"].events == 1
        assert monitor.rate == pytest.approx(200, rel=0.02)
        assert not monitor.states["latency"].active
        _traffic(monitor, clock, 100, 0.9 * WINDOW, 0.010)  # back to the plan, not yet for a whole window
        assert monitor.states["rate"].active
        _traffic(monitor, clock, 100, 0.5 * WINDOW, 0.010)
        assert not monitor.states["rate"].active and monitor.states["rate"].events == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("drifted from its plan" in m and "planned for 100 req/s" in m for m in messages), messages
    assert any("back inside its plan" in m for m in messages), messages


def test_a_short_burst_is_not_drift():
    monitor, clock = DriftMonitor(_plan(rate=100), window_s=WINDOW), [0.0]
    _traffic(monitor, clock, 100, 2 * WINDOW, 0.010)
    _traffic(monitor, clock, 300, 0.5 * WINDOW, 0.200)  # a burst, slower answers, half a window
    _traffic(monitor, clock, 100, 2 * WINDOW, 0.010)
    assert monitor.states["rate"].events == monitor.states["latency"].events == 0


def test_latency_above_the_slo_is_drift_and_a_rate_that_stops_is_seen_without_traffic():
    monitor, clock = DriftMonitor(_plan(rate=100, p99_s=0.050), window_s=WINDOW), [0.0]
    _traffic(monitor, clock, 100, 2 * WINDOW, 0.040)  # inside the 50 ms SLO
    assert not monitor.states["latency"].active
    _traffic(monitor, clock, 100, 2.5 * WINDOW, 0.080)
    assert monitor.states["latency"].active and monitor.p99 == pytest.approx(0.080)
    assert not monitor.states["rate"].active
    for _ in range(25):  # no requests at all: the server's periodic check sees the rate fall to zero
        clock[0] += WINDOW / 10
        monitor.check(clock[0])
    assert monitor.rate == 0 and monitor.states["rate"].active


def test_a_plan_predicted_above_its_slo_drifts_only_beyond_its_prediction():
    monitor = DriftMonitor(_plan(p99_s=0.050, predicted_p99_s=0.060), window_s=WINDOW)
    assert monitor.planned_p99 == pytest.approx(0.072)  # the prediction plus the 20% tolerance


def test_a_plan_without_an_slo_has_nothing_to_drift_from():
    with pytest.raises(ValueError, match="not planned for an SLO"):
        DriftMonitor(compile_app(g.pipeline))


def test_build_from_metrics_replans_for_the_rate_the_server_measured(tmp_path, capsys):
    """A real server on 127.0.0.1 runs a plan made for 20 req/s; it gets ~4x that; the drift
    shows in /-/metrics and ``build --from-metrics`` plans for the measured rate."""
    from graphserve.compiler.slo import plan_for_slo

    plan = compile_app(g.pipeline)
    profile = _profile(plan)
    planned = plan_for_slo(plan, profile, SLOPlan(p99_s=0.080, rate_rps=20), sim_requests=1000)
    profile_path = tmp_path / "profile.json"
    profile_path.write_text(profile.to_json())
    window = 0.8
    with running_server(planned, drift_window_s=window) as url:
        stop = threading.Event()

        async def load() -> None:  # ~80 req/s until the re-plan is done
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                pending = []
                for _ in range(80 * 30):  # bounded: 30 s at most
                    if stop.is_set():
                        break
                    pending.append(asyncio.ensure_future(client.post("/", json={"x": 0.5})))
                    await asyncio.sleep(1 / 80)  # the arrival process, not synchronisation
                assert all(r.status_code == 200 for r in await asyncio.gather(*pending))

        loader = threading.Thread(target=asyncio.run, args=(load(),))
        loader.start()
        try:
            assert wait_for_metric(httpx.Client(base_url=url, timeout=30), "graphserve_drift", 1, graph="pipeline",
                                   kind="rate")  # fmt: skip
            text = httpx.get(url + "/-/metrics", timeout=30).text
            out = tmp_path / "replanned.json"
            status = cli.main(["build", "--from-metrics", url, "--profile", str(profile_path), "-o", str(out),
                               "--cluster", "none"])  # fmt: skip
        finally:
            stop.set()
            loader.join(timeout=60)
        assert status == 0
    observed = metric(text, "graphserve_observed_rate_rps", graph="pipeline")
    assert observed is not None and observed > 40
    assert metric(text, "graphserve_planned_rate_rps", graph="pipeline") == 20
    assert metric(text, "graphserve_drift", graph="pipeline", kind="rate") == 1
    assert metric(text, "graphserve_drift_events", graph="pipeline", kind="rate") == 1
    replanned = Plan.from_json(out.read_text())
    assert replanned.slo is not None and replanned.slo.p99_s == pytest.approx(0.080)
    assert replanned.slo.rate_rps > 40  # what was measured, not the 20 planned
    printed = capsys.readouterr().out
    assert "measured at" in printed
    # the node latencies the server measured were compared with the profile's (and printed)
    assert "(the server's latencies over the profile's)" in printed or "profile used as it is" in printed


def test_build_from_metrics_errors_are_one_line(tmp_path, capsys):
    with running_server(g.pipeline) as url:  # a graph with no SLO: nothing measured to re-plan from
        assert cli.main(["build", "--from-metrics", url, "--profile", "none.json"]) == 1
    assert "was not planned for an SLO" in capsys.readouterr().err
    assert cli.main(["build", "--from-metrics", "http://127.0.0.1:9/", "--profile", "none.json"]) == 1
    assert "cannot read" in capsys.readouterr().err
