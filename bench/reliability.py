"""Reliability under faults: each scenario of the fault suite, measured against a real
``graphserve deploy`` on 127.0.0.1, and the figures written to
``bench/results/reliability.json`` (the README's "Reliability" section is generated
from it by ``python -m bench.readme``).

    python -m bench.reliability                 # every scenario (1-3 minutes on 2 cores)
    python -m bench.reliability --only fuzz,overload --out /tmp/r.json

Scenarios (each returns plain figures; ``tests/faults/`` runs the same functions and
asserts the pass criteria, :data:`CRITERIA`):

* ``fuzz``: schemathesis against every graph route of a server (POST and GET, valid and
  invalid bodies): cases tried and the statuses answered, per graph;
* ``overload``: ten times a graph's capacity (``--max-in-flight``) at a fixed rate: how
  fast the refused requests get their 503, and the latency of the admitted ones;
* ``replica_kill``: ``kill -9`` of a Ray replica's process under load: failures, hung
  requests, and how long until the restarted replica answers;
* ``sigterm``: SIGTERM with requests in flight, on the local and the Ray backend:
  statuses, exit status, and processes left behind;
* ``slow_clients``: slow-header and slow-body clients next to normal traffic (the server
  under a 256-descriptor limit): normal traffic's success rate with and without them;
* ``bad_requests``: malformed and hostile requests (deep nesting, huge integers, broken
  HTTP, unknown routes): every answer's status and whether its body is JSON with ``error``;
* ``sync_deadline``: a ``max_ongoing_requests=1`` synchronous model past its deadline: the
  most calls it ever ran at once.

Load is bounded in count and time and stops by itself; waits are on events (a line the
server prints, a metric, a response), never fixed sleeps.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphserve.runtime.connections import default_max_connections

from . import load
from .faults import (
    HOST,
    Deployed,
    FaultError,
    post,
    slow_body_client,
    slow_header_client,
    wait_until,
)
from .report import machine_info

RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"
GRAPHS = "tests.graphs.fault_graphs"

#: The pass criteria of issue 13 (checked by tests/faults and shown in the README).
CRITERIA = {
    "fuzz_cases_per_graph": 1000,  # at least, and no 5xx
    "overload_factor": 10,  # offered load / capacity
    "overload_503_p99_ms": 10.0,  # at most
    "overload_admitted_p99_x_service": 3.0,  # admitted p99 at most this times the service time
    "replica_recovery_s": 5.0,  # at most, kill -9 to the restarted replica answering
    "slow_clients_success_drop": 0.01,  # normal traffic's success rate may fall by at most this
}


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux
        return asyncio.run(coro)


def _counts(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return dict(sorted(out.items()))


# -- fuzz -----------------------------------------------------------------------------------
FUZZED = ("orders", "echoed", "picked")


def fuzz(cases_per_graph: int = CRITERIA["fuzz_cases_per_graph"]) -> dict[str, Any]:
    """schemathesis against each graph route: valid bodies (positive) and invalid ones
    (negative), on POST and GET, at least ``cases_per_graph`` cases per graph."""
    import schemathesis
    from schemathesis import GenerationMode

    targets = [f"{GRAPHS}:{name}" for name in FUZZED]
    with Deployed(targets, "--max-body-bytes", str(64 * 1024)) as server:
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        graph_paths = sorted({op.path for op in operations if not _is_operations_route(op.path)})
        per_graph: dict[str, Any] = {}
        failures: list[str] = []
        started = time.perf_counter()
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for path in graph_paths:
            ops = [op for op in operations if op.path == path]
            share = -(-cases_per_graph // (len(ops) * len(modes)))  # ceiling: at least cases_per_graph in all
            statuses: list[int] = []
            for operation in ops:
                for mode in modes:
                    _fuzz_operation(server.url, operation, mode, share, statuses, failures)
            per_graph[path] = {"cases": len(statuses), "statuses": _counts(statuses)}
        operations_statuses: list[int] = []
        for operation in operations:
            if _is_operations_route(operation.path) and operation.path != "/-/events":  # a stream: never ends
                _fuzz_operation(server.url, operation, modes[0], 10, operations_statuses, failures)
        elapsed = time.perf_counter() - started
        server.stop()
    return {
        "graphs": per_graph,
        "operations_routes": {"cases": len(operations_statuses), "statuses": _counts(operations_statuses)},
        "server_errors": len(failures),
        "first_failures": failures[:5],
        "seconds": round(elapsed, 1),
    }


def _is_operations_route(path: str) -> bool:
    return path.startswith("/-/") or path == "/openapi.json"


def _fuzz_operation(url: str, operation: Any, mode: Any, cases: int, statuses: list[int], failures: list[str]) -> None:
    """``cases`` generated requests to ``operation``; statuses and 5xx answers are appended."""
    from hypothesis import HealthCheck, Phase, given, settings

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if case.headers:
            # a valid but tiny deadline (5e-324 s) is rightly a 504: fuzz the body, not the clock
            case.headers.pop("X-Request-Timeout-S", None)
        if str((case.path_parameters or {}).get("file", "")).endswith((".svg", ".png")):
            case.path_parameters["file"] = "drawing.dot"  # svg/png run Graphviz: not what is fuzzed here
        response = case.call(base_url=url, timeout=30)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.path} {case.body!r}: {response.status_code} {response.text[:300]}")

    check()


# -- overload -------------------------------------------------------------------------------
def overload(
    max_in_flight: int = 4,
    service_s: float = 0.1,
    factor: float = CRITERIA["overload_factor"],
    duration_s: float = 3.0,
) -> dict[str, Any]:
    """``factor`` times the capacity (max_in_flight / service_s) at a fixed rate. The capacity
    is small (40 req/s) so that the client's own work at 10x stays a small share of a 2-core
    machine's CPU: the 503s' latency is the server's, not the load generator's."""
    capacity = max_in_flight / service_s
    body = json.dumps({"delay": service_s}).encode()
    with Deployed([f"{GRAPHS}:sleepy"], "--max-in-flight", str(max_in_flight)) as server:
        url = server.url + "/sleepy"
        baseline = load.open_loop(url, [body], capacity / 2, 1.0)
        loaded = load.open_loop(url, [body], capacity * factor, duration_s)
        server.stop()
    refused = loaded["service_ms_by_status"].get("503", {})
    admitted = loaded["service_ms_by_status"].get("200", {})
    return {
        "capacity_rps": capacity,
        "service_ms": service_s * 1000,
        "offered_rps": capacity * factor,
        "duration_s": duration_s,
        "requests": loaded["requests"],
        "completed": loaded["completed"],
        "statuses": loaded["statuses"],
        "errors": loaded["errors"],
        "refused_p50_ms": refused.get("p50"),
        "refused_p99_ms": refused.get("p99"),
        "admitted_p50_ms": admitted.get("p50"),
        "admitted_p99_ms": admitted.get("p99"),
        "admitted_rps": round(loaded["statuses"].get("200", 0) / loaded["duration_s"], 1),
        "baseline_p99_ms": baseline["service_ms_by_status"].get("200", {}).get("p99"),
        "client_max_send_lag_ms": loaded["max_send_lag_ms"],
    }


# -- kill -9 of a Ray replica ---------------------------------------------------------------
def start_ray_server() -> Deployed:
    """``replicated`` (2 replicas) and ``sleepy`` on a Ray instance the server starts itself."""
    return Deployed([f"{GRAPHS}:replicated", f"{GRAPHS}:sleepy"], backend="ray", ready_timeout_s=240)


def replica_kill(server: Deployed, clients: int = 6, call_s: float = 0.05, after_s: float = 1.0) -> dict[str, Any]:
    """Closed-loop load on ``replicated`` (2 replicas); ``kill -9`` one replica's process once
    both have answered; run until the restarted replica answers and the server has learnt of the
    death (a call failed), then ``after_s`` more: "answering after" counts what starts then."""
    body = json.dumps({"delay": call_s}).encode()
    records: list[dict[str, Any]] = []
    stop = threading.Event()
    killed: dict[str, Any] = {}

    async def client(conn_id: int) -> None:
        connection: load.Connection | None = None
        head = load.request_head("POST", HOST, server.port, "/replicated", body)
        while not stop.is_set():
            start = time.perf_counter()
            entry: dict[str, Any] = {"start": start}
            try:
                if connection is None:
                    connection = await load.Connection.open(HOST, server.port)
                status, _, payload = await asyncio.wait_for(connection.exchange(head, body), 15)
                entry["status"] = status
                answer = json.loads(payload)
                entry["pid"] = answer.get("pid") if status == 200 else None
                entry["error"] = answer.get("type") if status != 200 else None
            except TimeoutError:
                entry["status"] = "hung"
                connection = None
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                entry["status"] = f"client error {type(exc).__name__}"
                connection = None
            entry["end"] = time.perf_counter()
            records.append(entry)

    def killer() -> None:
        try:
            seen = wait_until(
                lambda: {r["pid"] for r in list(records) if r.get("pid")} if _two(records) else None,
                60,
                "both replicas answering",
            )
            victim = sorted(seen)[0]
            killed["pid"], killed["at"] = victim, time.perf_counter()
            killed["before"] = sorted(seen)
            os.kill(victim, signal.SIGKILL)
            restarted = wait_until(lambda: _first_new_pid(records, killed), 60, "the restarted replica to answer")
            killed["recovered_at"] = restarted["end"]
            killed["new_pid"] = restarted["pid"]
            # Ray may restart the process before the server learns of the death (its calls in
            # flight fail then): full service is measured once both have happened
            wait_until(
                lambda: any(r["status"] != 200 for r in list(records)) or time.perf_counter() > killed["at"] + 10,
                15,
                "the server to learn of the death",
            )
            deadline = time.perf_counter() + after_s
            wait_until(lambda: time.perf_counter() > deadline, after_s + 5, "the tail of the load")
        except FaultError as exc:  # reported below, from the caller's thread
            killed["error"] = exc
        finally:
            stop.set()

    async def main() -> None:
        watcher = threading.Thread(target=killer, daemon=True)
        watcher.start()
        await asyncio.gather(*(client(i) for i in range(clients)))
        watcher.join(10)

    _run(main())
    if "recovered_at" not in killed:
        raise FaultError(f"the killed replica did not come back ({killed.get('error')}):\n{server.log()[-3000:]}")
    kill_at = killed["at"]
    failed = [r for r in records if r["status"] != 200]
    in_flight_at_kill = [r for r in records if r["start"] <= kill_at <= r["end"]]
    # the first failed answer is when the server learnt of the death (and routed around it)
    noticed = min((r["end"] for r in failed), default=kill_at)
    after = [r for r in records if r["start"] > max(killed["recovered_at"], noticed)]
    return {
        "clients": clients,
        "call_ms": call_s * 1000,
        "replicas": 2,
        "max_ongoing_per_replica": 4,
        "requests": len(records),
        "statuses": _counts([r["status"] for r in records]),
        "failed": len(failed),
        "failed_in_flight_at_kill": sum(1 for r in failed if r["start"] <= kill_at <= r["end"]),
        # sent to the dead replica in the moment before the server could know it had died
        "failed_sent_before_noticed": sum(1 for r in failed if kill_at < r["start"] < noticed),
        "failed_after_noticed": sum(1 for r in failed if r["start"] >= noticed),
        "death_noticed_after_s": round(noticed - kill_at, 3),
        "in_flight_at_kill": len(in_flight_at_kill),
        "hung": sum(1 for r in records if r["status"] == "hung"),
        "slowest_ms": round(max(r["end"] - r["start"] for r in records) * 1000, 1),
        "recovery_s": round(killed["recovered_at"] - kill_at, 3),
        "replicas_answering_after": len({r["pid"] for r in after if r.get("pid")}),
        "failure_types": sorted({str(r.get("error")) for r in failed}),
    }


def _two(records: list[dict[str, Any]]) -> bool:
    return len({r["pid"] for r in list(records) if r.get("pid")}) >= 2


def _first_new_pid(records: list[dict[str, Any]], killed: dict[str, Any]) -> dict[str, Any] | None:
    for r in list(records):
        if r.get("pid") and r["pid"] not in killed["before"] and r["start"] > killed["at"]:
            return r
    return None


# -- SIGTERM with requests in flight --------------------------------------------------------
def sigterm(server: Deployed, requests: int = 8, delay_s: float = 1.5, graph: str = "sleepy") -> dict[str, Any]:
    """``requests`` calls of ``delay_s`` to ``graph`` in flight, then SIGTERM to the server."""
    body = json.dumps({"delay": delay_s}).encode()

    async def main() -> tuple[list[Any], float]:
        calls = [asyncio.ensure_future(post(server.port, f"/{graph}", body)) for _ in range(requests)]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None,
            lambda: wait_until(
                lambda: server.metric("graphserve_in_flight_requests", graph=graph) >= requests,
                60,
                f"{requests} requests in flight",
            ),
        )
        server.tree()  # remember every process it started before it stops
        sent = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*calls, return_exceptions=True)
        return answers, sent

    started = len(server.tree())
    answers, sent = _run(main())
    code = server.proc.wait(120)
    exited = time.perf_counter()
    left = server.leftovers()
    statuses = [a[0] if isinstance(a, tuple) else type(a).__name__ for a in answers]
    return {
        "requests": requests,
        "request_s": delay_s,
        "statuses": _counts(statuses),
        "exit_code": code,
        "signal_to_exit_s": round(exited - sent, 2),
        "processes_started": started,
        "processes_left": len(left),
    }


# -- slow clients ---------------------------------------------------------------------------
def slow_clients(
    slow_body: int = 12,
    slow_header: int = 300,
    rate: float = 100.0,
    duration_s: float = 4.0,
    nofile: int = 256,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """Normal traffic at ``rate`` next to ``slow_body`` clients trickling a 1 kB body and
    ``slow_header`` clients trickling headers, on a server limited to ``nofile`` descriptors
    and ``--max-in-flight 12``; the same traffic alone first, as the baseline."""
    flags = ["--max-in-flight", "12", "--header-timeout-s", str(timeout_s), "--body-timeout-s", str(timeout_s)]
    with Deployed([f"{GRAPHS}:echoed"], *flags, nofile=nofile) as server:
        url = server.url + "/echo"
        bodies = [b'{"x": 1}']
        baseline = load.open_loop(url, bodies, rate, duration_s / 2)

        async def attack() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], float]:
            stop = asyncio.Event()
            body_log: list[dict[str, Any]] = []
            header_log: list[dict[str, Any]] = []
            tasks = [
                asyncio.ensure_future(slow_body_client(server.port, "/echo", 1000, stop, 0.25, body_log))
                for _ in range(slow_body)
            ]
            tasks += [
                asyncio.ensure_future(slow_header_client(server.port, stop, 0.5, header_log))
                for _ in range(slow_header)
            ]

            def connected() -> float | None:
                count = server.metric("graphserve_open_connections")
                return count if count >= 64 else None

            opened = await asyncio.get_running_loop().run_in_executor(
                None, lambda: wait_until(connected, 30, "the slow clients connected")
            )
            normal = await load.open_loop_async(url, bodies, rate, duration_s, 256, 10.0)
            stop.set()
            await asyncio.wait(tasks, timeout=timeout_s + 5)
            for task in tasks:
                task.cancel()
            return normal, body_log, header_log, opened

        normal, body_log, header_log, opened = _run(attack())
        closed = server.metrics()
        server.stop()
    reasons = {
        key.split('reason="', 1)[1].rstrip('"}'): int(value)
        for key, value in closed.items()
        if key.startswith("graphserve_connections_closed_total{")
    }
    lasted = [e["lasted_s"] for e in header_log if e["status"] is not None]
    return {
        "nofile": nofile,
        "max_in_flight": 12,
        "header_timeout_s": timeout_s,
        "body_timeout_s": timeout_s,
        "slow_body_clients": slow_body,
        "slow_header_clients": slow_header,
        "open_connections_seen": int(opened),
        "baseline_success": _success(baseline),
        "under_attack_success": _success(normal),
        "under_attack_statuses": normal["statuses"],
        "under_attack_errors": normal["errors"],
        "under_attack_p99_ms": normal["latency_ms"].get("p99"),
        "slow_body_answers": _counts([e["status"] for e in body_log]),
        "slow_header_closes": _counts([e["status"] for e in header_log]),
        "slow_header_longest_s": round(max(lasted), 2) if lasted else None,
        "server_closed": reasons,
        "connection_cap": default_max_connections(nofile),
    }


def _success(run: dict[str, Any]) -> float:
    return round(run["statuses"].get("200", 0) / run["requests"], 4) if run["requests"] else 0.0


# -- bad requests ---------------------------------------------------------------------------
BAD_REQUESTS: dict[str, tuple[str, bytes]] = {
    "nested 300 deep": ("/echo", b"[" * 300 + b"]" * 300),
    "nested 1000 deep": ("/echo", b"[" * 1000 + b"]" * 1000),
    "nested 100,000 deep": ("/echo", b"[" * 100_000 + b"]" * 100_000),
    "integer of 30 digits": ("/echo", b'{"n": 123456789012345678901234567890}'),
    "integer of 5000 digits": ("/echo", b'{"n": ' + b"9" * 5000 + b"}"),
    "malformed JSON": ("/echo", b'{"x": '),
    "unknown route": ("/nosuch", b"{}"),
    "schema mismatch": ("/orders", b'{"id": "x"}'),
}


def bad_requests() -> dict[str, Any]:
    """Each of :data:`BAD_REQUESTS` and two broken HTTP requests: status and JSON-ness of the answer."""
    targets = [f"{GRAPHS}:echoed", f"{GRAPHS}:orders"]
    with Deployed(targets) as server:

        async def main() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, (path, body) in BAD_REQUESTS.items():
                status, payload = await post(server.port, path, body)
                out[name] = _answer(status, payload, body)
            out["method DELETE"] = _answer(*await _raw(server.port, b"DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n"))
            out["broken request line"] = _answer(*await _raw(server.port, b"GARBAGE\x00\r\n\r\n"))
            return out

        answers = _run(main())
        counted = {k: v for k, v in server.metrics().items() if k.startswith("graphserve_requests_total{")}
        server.stop()
    return {"answers": answers, "requests_total": counted}


def _answer(status: int, payload: bytes, sent: bytes | None = None) -> dict[str, Any]:
    """A 2xx: whether the echo came back exactly as sent; else: whether the body is JSON with
    ``error``, and the start of that error."""
    if 200 <= status < 300:
        return {
            "status": status,
            "json_error": False,
            "exact": sent is not None and json.loads(payload) == json.loads(sent),
        }
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    text = error if isinstance(error, str) else payload.decode(errors="replace")
    if len(text) > 160:
        text = text[:160].rsplit(" ", 1)[0] + " ..."
    return {"status": status, "json_error": isinstance(error, str), "error": text}


async def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- a synchronous node past its deadline ---------------------------------------------------
def sync_deadline(requests: int = 6, call_s: float = 0.6, gap_s: float = 0.25) -> dict[str, Any]:
    """``requests`` calls of ``call_s``, one every ``gap_s``, to a ``max_ongoing_requests=1``
    sync model whose graph answers 504 after 0.2 s; then one more call reports the most
    calls the model ever ran at once."""

    with Deployed([f"{GRAPHS}:one_at_a_time"]) as server:
        body = json.dumps({"delay": call_s}).encode()

        async def main() -> tuple[list[Any], list[float], dict[str, Any]]:
            timings: list[float] = []

            async def one(i: int) -> tuple[int, bytes]:
                await asyncio.sleep(i * gap_s)  # arrivals spread over the call: each finds the slot "free"
                start = time.perf_counter()
                answer = await post(server.port, "/one_at_a_time", body)
                timings.append(time.perf_counter() - start)
                return answer

            answers = await asyncio.gather(*(one(i) for i in range(requests)))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None,
                lambda: wait_until(
                    lambda: (
                        server.metric(
                            "graphserve_deployment_ongoing_requests", graph="one_at_a_time", deployment="OneAtATime"
                        )
                        == 0
                    ),
                    requests * call_s + 10,
                    "the model's calls to end",
                ),
            )
            status, payload = await post(server.port, "/one_at_a_time", json.dumps({"delay": 0}).encode())
            return list(answers), timings, {"status": status, **json.loads(payload)}

        answers, timings, last = _run(main())
        server.stop()
    return {
        "requests": requests,
        "call_s": call_s,
        "deadline_s": 0.2,
        "statuses": _counts([a[0] for a in answers]),
        "slowest_answer_s": round(max(timings), 3),
        "most_at_once": last.get("most_at_once"),
    }


# -- the run --------------------------------------------------------------------------------
def ray_scenarios() -> dict[str, Any]:
    server = start_ray_server()
    try:
        killed = replica_kill(server)
        stopped = sigterm(server)
    finally:
        server.close()
    return {"replica_kill": killed, "sigterm_ray": stopped}


def local_sigterm() -> dict[str, Any]:
    with Deployed([f"{GRAPHS}:sleepy"]) as server:
        return sigterm(server)


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "bad_requests": bad_requests,
    "sync_deadline": sync_deadline,
    "overload": overload,
    "slow_clients": slow_clients,
    "sigterm_local": local_sigterm,
    "ray": ray_scenarios,
    "fuzz": fuzz,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; scenarios: {list(SCENARIOS)}")
    machine = machine_info()
    for name in ("schemathesis", "hypothesis"):
        machine["packages"][name] = importlib.metadata.version(name)
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "criteria": CRITERIA,
        "load_before": list(os.getloadavg()),
    }
    for name in chosen:
        print(f"[reliability] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        figures = SCENARIOS[name]()
        results.update(figures if name == "ray" else {name: figures})
        print(f"[reliability] {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    results["load_after"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# -- the figures as rows of pass/fail (the README's Reliability section) --------------------
def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{status}: {count:,}" for status, count in sorted(counts.items()))


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scenario measured: what it is, its pass criterion, the figures, passed."""
    criteria = {**CRITERIA, **results.get("criteria", {})}
    rows: list[dict[str, Any]] = []

    def row(scenario: str, criterion: str, measured: str, passed: bool) -> None:
        rows.append({"scenario": scenario, "criterion": criterion, "measured": measured, "passed": passed})

    if "fuzz" in results:
        f = results["fuzz"]
        per = "; ".join(
            f"`{path}` {g['cases']:,} cases ({_statuses(g['statuses'])})" for path, g in f["graphs"].items()
        )
        enough = all(g["cases"] >= criteria["fuzz_cases_per_graph"] for g in f["graphs"].values())
        row(
            "schemathesis against every graph route (POST and GET, valid and invalid bodies)",
            f">= {criteria['fuzz_cases_per_graph']:,} cases per graph, no 5xx",
            f"{per}; operations routes {f['operations_routes']['cases']} cases; 5xx: {f['server_errors']}",
            enough and f["server_errors"] == 0,
        )
    if "overload" in results:
        o = results["overload"]
        bound = criteria["overload_admitted_p99_x_service"] * o["service_ms"]
        row(
            f"{o['offered_rps'] / o['capacity_rps']:g}x overload: {o['offered_rps']:g} req/s for {o['duration_s']:g} s "
            f"at a capacity of {o['capacity_rps']:g} (`--max-in-flight`, {o['service_ms']:g} ms calls)",
            f"503 p99 <= {criteria['overload_503_p99_ms']:g} ms; admitted p99 <= {bound:g} ms",
            f"{_statuses(o['statuses'])}; 503 p50 {o['refused_p50_ms']:.2f} ms, p99 {o['refused_p99_ms']:.2f} ms; "
            f"admitted p50 {o['admitted_p50_ms']:.1f} ms, p99 {o['admitted_p99_ms']:.1f} ms "
            f"({o['admitted_rps']:g} req/s; p99 {o['baseline_p99_ms']:.1f} ms at half the capacity)",
            o["refused_p99_ms"] <= criteria["overload_503_p99_ms"] and o["admitted_p99_ms"] <= bound,
        )
    if "replica_kill" in results:
        k = results["replica_kill"]
        row(
            f"`kill -9` of a Ray replica's process under load ({k['clients']} clients, {k['replicas']} replicas of "
            f"{k['max_ongoing_per_replica']} places, {k['call_ms']:g} ms calls)",
            f"no hung request; failures only for calls in flight on it (sent to it before its death was "
            f"known); full service in <= {criteria['replica_recovery_s']:g} s",
            f"{k['requests']:,} requests ({_statuses(k['statuses'])}); {k['hung']} hung; {k['failed']} failed "
            f"({', '.join(k['failure_types']) or '-'}): {k['failed_in_flight_at_kill']} in flight at the kill, "
            f"{k['failed_sent_before_noticed']} sent to it in the {k['death_noticed_after_s'] * 1000:.0f} ms before "
            f"the server knew, {k['failed_after_noticed']} after; the restarted replica answered "
            f"{k['recovery_s']:.2f} s after the kill; {k['replicas_answering_after']} replicas answering after",
            k["hung"] == 0
            and k["failed_after_noticed"] == 0
            and k["failed"] <= k["max_ongoing_per_replica"]
            and k["recovery_s"] <= criteria["replica_recovery_s"]
            and k["replicas_answering_after"] == k["replicas"],
        )
    for key, backend in (("sigterm_local", "local"), ("sigterm_ray", "Ray")):
        if key in results:
            s = results[key]
            left = (
                f"; {s['processes_started']} processes started, {s['processes_left']} left" if backend == "Ray" else ""
            )
            row(
                f"SIGTERM with {s['requests']} requests of {s['request_s']:g} s in flight, {backend} backend",
                "all answered 200, exit 0" + (", no Ray process left" if backend == "Ray" else ""),
                f"{_statuses(s['statuses'])}; exit {s['exit_code']} {s['signal_to_exit_s']:g} s after the signal{left}",
                s["statuses"] == {"200": s["requests"]} and s["exit_code"] == 0 and s["processes_left"] == 0,
            )
    if "slow_clients" in results:
        c = results["slow_clients"]
        drop = criteria["slow_clients_success_drop"]
        closed = ", ".join(f"{reason} {count:,}" for reason, count in sorted(c["server_closed"].items()))
        row(
            f"{c['slow_body_clients']} slow-body and {c['slow_header_clients']} slow-header clients next to normal "
            f"traffic (`--max-in-flight {c['max_in_flight']}`, {c['nofile']} file descriptors, "
            f"header and body timeouts {c['header_timeout_s']:g} s)",
            f"normal traffic's success rate falls by <= {drop * 100:g} percentage point{'s' if drop != 0.01 else ''}",
            f"{c['under_attack_success'] * 100:.1f}% succeeded ({c['baseline_success'] * 100:.1f}% alone), "
            f"p99 {c['under_attack_p99_ms']:.1f} ms; slow bodies answered {_statuses(c['slow_body_answers'])}; "
            f"the server closed: {closed}; the longest slow-header connection lasted {c['slow_header_longest_s']:g} s",
            c["under_attack_success"] >= c["baseline_success"] - drop,
        )
    if "sync_deadline" in results:
        d = results["sync_deadline"]
        row(
            f"a sync model with `max_ongoing_requests=1` and {d['call_s']:g} s calls, {d['requests']} requests "
            f"past a {d['deadline_s']:g} s deadline",
            "never two calls at once; each answered 504 at its deadline",
            f"{_statuses(d['statuses'])}, the slowest after {d['slowest_answer_s']:g} s; "
            f"at most {d['most_at_once']} call at once",
            d["most_at_once"] == 1 and d["statuses"] == {"504": d["requests"]} and d["slowest_answer_s"] < d["call_s"],
        )
    if "bad_requests" in results:
        answers = results["bad_requests"]["answers"]
        errors = {k: v for k, v in answers.items() if v["status"] >= 400}
        counted = int(sum(results["bad_requests"]["requests_total"].values()))
        row(
            "malformed and hostile requests (table below)",
            "a 4xx with a JSON body holding `error`, counted in `graphserve_requests_total`; big integers exact",
            f"{sum(v['json_error'] and v['status'] < 500 for v in errors.values())} of {len(errors)} errors JSON 4xx; "
            f"{counted} of {len(answers)} counted",
            all(v["json_error"] and v["status"] < 500 for v in errors.values())
            and all(v.get("exact", True) for v in answers.values())
            and counted == len(answers),
        )
    return rows
