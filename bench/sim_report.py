"""The simulator benchmark's tables, from ``bench/results/sim.json`` (never typed).

``bench/readme.py`` registers :func:`markdown` as the README's generated section ``sim``
(between ``<!-- bench:sim:start -->`` and ``<!-- bench:sim:end -->``):
``python -m bench.readme`` rewrites it, ``--check`` compares.
"""

from __future__ import annotations

from typing import Any

RESULTS = "bench/results/sim.json"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def _ok(passed: Any) -> str:
    return "pass" if passed else "FAIL"


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _spread(figures: dict[str, float] | None, digits: int) -> str:
    """'median (max)' of a figure over a rate's runs."""
    if not figures:
        return "-"
    return f"{_num(figures['median'], digits)} ({_num(figures['max'], digits)})"


def markdown(results: dict[str, Any]) -> str:
    """The tables: predicted vs measured per graph and rate, capacity, and the simulator's speed."""
    m = results.get("machine", {})
    cfg = results.get("config", {})
    lines = [
        f"Run of {results.get('started', '?')} on {m.get('cpu', '?')}, {m.get('usable_cores', '?')} cores "
        f"(load average {results.get('load', {}).get('before', ['?'])[0]} before, "
        f"{results.get('load', {}).get('after', ['?'])[0]} after); {cfg.get('duration_s', '?')} s of Poisson "
        f"arrivals per run, {cfg.get('repeats', 1)} run(s) per rate, each figure the median over the runs; "
        f"profiles of {cfg.get('profile_s', '?')} s; a run's prediction is the mean of "
        f"{cfg.get('sim_seeds', '?')} simulator seeds on the times its requests were sent.",
        "",
        "Latency is measured by the client (from the moment each request was sent) and by the server "
        "(`Server-Timing`: from the ingress receiving the request to the response starting). "
        "How busy the machine was during a rate's runs: the 1-minute load average at the end of each run "
        "(the benchmark's own client and server add about 1), and how long the server's threads waited, "
        "ready to run, for a core per second of the run (median and largest over the runs).",
        "",
        "| graph | load | rate req/s | p50 ms predicted / client / server | p99 ms predicted "
        "| p99 ms client (error) | p99 ms server (error) | throughput predicted / measured (error) "
        "| pass: client / server | machine load avg (max) | server waited for a core, ms/s (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for name, graph in results.get("graphs", {}).items():
        if "error" in graph:
            lines.append(f"| {name} | - | - | - | - | - | - | - | error: {graph['error'][:80]} | - | - |")
            continue
        for row in graph.get("rates", []):
            p, g, e = row["predicted"], row.get("measured", {}), row.get("error", {})
            s, se = row.get("measured_server", {}), row.get("error_server", {})
            machine = row.get("machine", {})
            lines.append(
                f"| {name} | {row['fraction']:.0%} | {_num(row['rate'])} "
                f"| {_num(p['p50_ms'], 2)} / {_num(g.get('p50_ms'), 2)} / {_num(s.get('p50_ms'), 2)} "
                f"| {_num(p['p99_ms'], 2)} "
                f"| {_num(g.get('p99_ms'), 2)} ({_pct(e.get('p99_ms'))}) "
                f"| {_num(s.get('p99_ms'), 2)} ({_pct(se.get('p99_ms'))}) "
                f"| {_num(p['throughput_rps'])} / {_num(g.get('throughput_rps'))} ({_pct(e.get('throughput_rps'))}) "
                f"| {_ok(row.get('passed'))} / {_ok(row.get('passed_server'))} "
                f"| {_spread(machine.get('load_1m'), 2)} | {_spread(machine.get('server_core_wait_ms_per_s'), 1)} |"
            )
    lines += [
        "",
        "| graph | capacity over HTTP (wrk, 32 connections) | in process (32 callers, no HTTP) | predicted "
        "| profile: share of timed calls spent waiting for a core (left out) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, graph in results.get("graphs", {}).items():
        cap = graph.get("capacity")
        if cap:
            share = graph.get("profile_machine_wait_share")
            lines.append(
                f"| {name} | {_num(cap['measured_rps'])} req/s | {_num(cap.get('in_process_rps'))} req/s "
                f"| {_num(cap['predicted_rps'])} req/s | {'-' if share is None else f'{share:.1%}'} |"
            )
    speed = results.get("speed", {})
    if speed:
        target = cfg.get("speed_target_s", 5.0)
        lines += [
            "",
            f"Simulator speed (target: {cfg.get('speed_requests', 100_000):,} requests in under {target:g} s "
            "on one core):",
            "",
            "| graph | simulated requests | seconds |",
            "|---|---:|---:|",
        ]
        for name, s in speed.items():
            lines.append(f"| {name} | {s['requests']:,} | {s['seconds']:.2f} |")
    targets = results.get("targets", {})
    acc = targets.get("accuracy")
    if acc:
        lines += [
            "",
            f"Accuracy target (p99 within 20%, throughput within 5%) met at {acc['passed']} of {acc['rows']} "
            f"graph x rate points against the client's measurements, and at {acc.get('passed_server', '-')} of "
            f"{acc['rows']} against the server's.",
        ]
    return "\n".join(lines) + "\n"
