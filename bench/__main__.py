"""``python -m bench``: every workload on every system, the per-hop and cold-start figures,
a markdown table on stdout, and JSON with the raw numbers (``bench/results/latest.json``).

    python -m bench                                   # the full run (~15 minutes on 2 cores)
    python -m bench --quick                           # 1 s per measurement, a smoke run
    python -m bench --only W1,W3 --systems local,starlette
    python -m bench --only hop,coldstart
    python -m bench --only rayhop                     # a Ray hop, graphserve's per node on Ray (fused, unfused)
    python -m bench --only sim                        # the simulator's accuracy (bench/results/sim.json)
    python -m bench --only w6                         # SLO planning vs hand settings (bench/results/w6.json)
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from . import coldstart, costs, hop, load, report, servers

WORKLOADS = ("W1", "W2", "W3", "W4", "W4cpu", "W5")
EXTRAS = ("hop", "rayhop", "coldstart", "sim", "w6")
ON_REQUEST = ("sim", "w6")  # run only when named
PAIRED = ("starlette", "local")  # measured side by side in alternating rounds (see run_paired)
OVER_CAPACITY = 0.9  # fixed-rate runs above this fraction of the closed-loop peak are skipped
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    fmt = argparse.RawTextHelpFormatter
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=fmt)
    p.add_argument("--quick", action="store_true", help="1 s measurements, no warm-up, fewer repeats")
    everything = ",".join(WORKLOADS + tuple(e for e in EXTRAS if e not in ON_REQUEST))
    p.add_argument(
        "--only", default=everything, help="W1..W5,W4cpu,hop,rayhop,coldstart,sim,w6 (sim, w6 only when named)"
    )
    p.add_argument("--systems", default=",".join(servers.SYSTEMS), help="starlette,local,ray,rayserve")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per workload (default 1)")
    p.add_argument("--connections", default="1,16,64", help="closed-loop connection counts")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per closed-loop figure, each --round-s seconds; the figure is the median round\n"
        "(default 5, 1 with --quick); raw Starlette and graphserve local alternate round by round",
    )
    p.add_argument("--round-s", type=float, default=None, help="seconds per round (default 2)")
    p.add_argument(
        "--rates",
        default="50,1000",
        help="fixed-rate runs, requests/s (empty: none); a rate above 90%% of a system's\n"
        "closed-loop peak for that workload is skipped (it would only measure a growing queue)",
    )
    p.add_argument("--open-duration", type=float, default=None, help="seconds of the fixed-rate run (default 5)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="where the JSON goes")
    p.add_argument(
        "--merge-into",
        type=Path,
        default=None,
        help="update this earlier run's JSON with the workloads and systems measured now (the rest\n"
        "is kept; the file records what was re-measured, when and at which commit) and write it to --out",
    )
    p.add_argument("--sim-out", type=Path, default=RESULTS / "sim.json", help="where the simulator's results go")
    p.add_argument("--sim-duration", type=float, default=None, help="sim: seconds per run (default 10)")
    p.add_argument(
        "--sim-graphs",
        default=None,
        help="sim: which graphs, e.g. batched,conditional (default all); with --sim-out elsewhere,\n"
        "as bench/results/sim.json must hold every graph",
    )
    p.add_argument("--w6-out", type=Path, default=RESULTS / "w6.json", help="where W6's results go")
    p.add_argument("--w6-duration", type=float, default=None, help="seconds of arrivals per rate, w6 (default 15)")
    p.add_argument("--w6-profile", type=float, default=None, help="seconds of profiling, w6 (default 8)")
    p.add_argument("--w6-systems", default="planned,hand,rayserve", help="w6: which of planned,hand,rayserve")
    args = p.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (0.0 if args.quick else 1.0)
    args.rounds = max(1, args.rounds if args.rounds is not None else (1 if args.quick else 5))
    args.round_s = args.round_s if args.round_s is not None else (1.0 if args.quick else 2.0)
    args.open_duration = args.open_duration if args.open_duration is not None else (1.0 if args.quick else 5.0)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(WORKLOADS) - set(EXTRAS))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown += sorted(set(systems) - set(servers.SYSTEMS))
    if unknown:
        p.error(f"unknown workloads/systems {unknown}; workloads: {WORKLOADS + EXTRAS}, systems: {servers.SYSTEMS}")
    args.workloads = [w for w in WORKLOADS if w in only]
    args.extras = [e for e in EXTRAS if e in only]
    args.systems = [s for s in servers.SYSTEMS if s in systems]
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.w6_duration = args.w6_duration or (3.0 if args.quick else 15.0)
    args.w6_profile = args.w6_profile or (4.0 if args.quick else 8.0)
    args.w6_systems = [s.strip() for s in args.w6_systems.split(",") if s.strip()]
    return args


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _bodies(workload: str) -> list[bytes]:
    return costs.W5_BODIES if workload == "W5" else [costs.BODY]


def run_system(system: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Each workload on a server of its own (idle replicas of other graphs cost Ray CPU time)."""
    out: dict[str, Any] = {"label": servers.LABELS[system], "load_before": os.getloadavg(), "workloads": {}}
    for wid in args.workloads:
        res: dict[str, Any] = {"closed": {}}
        out["workloads"][wid] = res
        try:
            server = servers.start(system, [wid], log_dir)
        except servers.ServerError as exc:
            res["error"] = str(exc)
            _log(f"{system} {wid}: did not start: {exc}")
            continue
        res["started_s"] = round(server.started_s, 2)
        _log(f"{system} {wid}: ready in {server.started_s:.1f}s on port {server.port}")
        try:
            measure_workload(server, wid, args, res)
        except (load.LoadError, servers.ServerError, OSError) as exc:
            res["error"] = str(exc)
            _log(f"{system} {wid}: {exc}")
        finally:
            servers.stop(server)
            res["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out["load_after"] = os.getloadavg()
    return out


def measure_workload(server: servers.Server, wid: str, args: argparse.Namespace, res: dict[str, Any]) -> None:
    url, bodies, system = server.url(wid), _bodies(wid), server.system
    if args.warmup > 0:
        load.closed_loop(url, bodies, 16, args.warmup)
    for c in args.connections:
        measured = [load.closed_loop(url, bodies, c, args.round_s) for _ in range(args.rounds)]
        m = res["closed"][str(c)] = median_round(measured)
        p50 = m["latency_ms"]["p50"]
        _log(f"{system} {wid} c={c}: {m['rps']:.0f} req/s (rounds {m['rounds_rps']}) p50 {p50:.2f} ms")
    measure_open(server, wid, args, res)


def median_round(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """A closed-loop figure from its rounds: the median round, with every round's req/s."""
    median = sorted(measured, key=lambda m: m["rps"])[len(measured) // 2]
    return {**median, "rounds_rps": [round(x["rps"], 1) for x in measured]}


def run_paired(systems: list[str], args: argparse.Namespace, log_dir: Path) -> dict[str, dict[str, Any]]:
    """``systems`` side by side (raw Starlette and graphserve local: their ratios are targets):
    per workload, a server of each, and each closed-loop figure measured in ``--rounds`` rounds
    that alternate between the systems (who goes first alternates too); each system's figure is
    its median round. So a ratio compares measurements seconds apart, not minutes."""
    outs = {s: {"label": servers.LABELS[s], "load_before": os.getloadavg(), "workloads": {}} for s in systems}
    for wid in args.workloads:
        running: dict[str, servers.Server] = {}
        for system in systems:
            res: dict[str, Any] = {"closed": {}}
            outs[system]["workloads"][wid] = res
            try:
                running[system] = servers.start(system, [wid], log_dir)
            except servers.ServerError as exc:
                res["error"] = str(exc)
                _log(f"{system} {wid}: did not start: {exc}")
                continue
            res["started_s"] = round(running[system].started_s, 2)
        try:
            bodies = _bodies(wid)
            if args.warmup > 0:
                for server in running.values():
                    load.closed_loop(server.url(wid), bodies, 16, args.warmup)
            for c in args.connections:
                rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in running}
                for r in range(args.rounds):
                    order = list(running) if r % 2 == 0 else list(reversed(running))
                    for system in order:
                        rounds[system].append(load.closed_loop(running[system].url(wid), bodies, c, args.round_s))
                for system, measured in rounds.items():
                    m = outs[system]["workloads"][wid]["closed"][str(c)] = median_round(measured)
                    p50 = m["latency_ms"]["p50"]
                    _log(f"{system} {wid} c={c}: {m['rps']:.0f} req/s (rounds {m['rounds_rps']}) p50 {p50:.2f} ms")
            for system, server in running.items():
                measure_open(server, wid, args, outs[system]["workloads"][wid])
        except (load.LoadError, servers.ServerError, OSError) as exc:
            for system in running:
                outs[system]["workloads"][wid]["error"] = str(exc)
            _log(f"{wid}: {exc}")
        finally:
            for system, server in running.items():
                servers.stop(server)
                outs[system]["workloads"][wid]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    for out in outs.values():
        out["load_after"] = os.getloadavg()
    return outs


def merged(earlier: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``earlier`` with the workloads of the systems measured ``now`` replaced, and a record of it
    in ``remeasured`` (when, which commit, what, the load average)."""
    out = dict(earlier)
    systems = {name: dict(system) for name, system in earlier.get("systems", {}).items()}
    for name, system in now.get("systems", {}).items():
        target = systems.setdefault(name, {"label": system.get("label"), "workloads": {}})
        target["workloads"] = {**target.get("workloads", {}), **system.get("workloads", {})}
    out["systems"] = systems
    for extra in EXTRAS:
        if extra in now:
            out[extra] = now[extra]
    out["remeasured"] = [
        *earlier.get("remeasured", []),
        {
            "started": now["started"],
            "git_commit": now["machine"].get("git_commit"),
            "git_dirty": now["machine"].get("git_dirty"),
            "systems": list(now.get("systems", {})),
            "workloads": now["config"]["workloads"],
            "extras": now["config"]["extras"],
            "load": now["load"],
        },
    ]
    return out


def measure_open(server: servers.Server, wid: str, args: argparse.Namespace, res: dict[str, Any]) -> None:
    """The fixed-rate runs (below 90% of the closed-loop peak), then a check of the answers."""
    url, bodies, system = server.url(wid), _bodies(wid), server.system
    peak = max((m["rps"] for m in res["closed"].values()), default=None)
    res["open"] = {}
    for rate in args.rates:
        if peak is not None and rate > OVER_CAPACITY * peak:
            res["open"][f"{rate:g}"] = {"skipped": f"over capacity: closed-loop peak {peak:.0f} req/s"}
            continue
        o = res["open"][f"{rate:g}"] = load.open_loop(url, bodies, rate, args.open_duration)
        lat = o["latency_ms"]
        _log(f"{system} {wid} {rate:g}/s: p50 {lat.get('p50')} p99 {lat.get('p99')} ms, {o['error_count']} errors")
    servers.check(server, wid)  # still answering correctly after the load


def run_sim(args: argparse.Namespace) -> None:
    """The simulator's accuracy and speed (``bench/sim.py``), into their own file."""
    from . import sim, sim_report

    options = argparse.Namespace(
        quick=args.quick,
        duration_s=args.sim_duration or (1.0 if args.quick else 10.0),
        profile_s=2.0 if args.quick else 10.0,
        capacity_s=1.0 if args.quick else 5.0,
        out=args.sim_out,
        graphs=sim.graph_names(args.sim_graphs),
    )
    results = sim.run(options)
    print(sim_report.markdown(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "sim" in args.extras:
        run_sim(args)
        args.extras.remove("sim")
    if "w6" in args.extras:
        from . import readme, w6

        print(readme.w6_table(w6.main(args)))
        args.extras.remove("w6")
    if not args.workloads and not args.extras:
        return 0
    if args.workloads and args.systems and load.wrk_path() is None:
        print("error: wrk is not installed (apt-get install -y wrk, or `make bench`)", file=sys.stderr)
        return 2
    started = time.time()
    results: dict[str, Any] = {
        "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "machine": report.machine_info(),
        "config": {
            "workloads": args.workloads,
            "systems": args.systems,
            "extras": args.extras,
            "connections": args.connections,
            "rounds": args.rounds,
            "round_s": args.round_s,
            "warmup_s": args.warmup,
            "rates": args.rates,
            "open_duration_s": args.open_duration,
            "quick": args.quick,
            "costs": {
                "fanout_s": costs.FANOUT_S,
                "batch_fixed_s": costs.BATCH_FIXED_S,
                "batch_per_item_s": costs.BATCH_PER_ITEM_S,
                "max_batch_size": costs.MAX_BATCH_SIZE,
                "batch_wait_s": costs.BATCH_WAIT_S,
                "cheap_s": costs.CHEAP_S,
                "expensive_s": costs.EXPENSIVE_S,
                "expensive_fraction": costs.EXPENSIVE_FRACTION,
                "theoretical_batch_rps": round(costs.theoretical_batch_rps(), 1),
            },
        },
        "load": {"before": [round(x, 2) for x in os.getloadavg()]},
        "systems": {},
    }
    log_dir = args.out.parent / "logs"
    if args.workloads:
        paired = [s for s in PAIRED if s in args.systems]
        if len(paired) > 1:
            results["systems"].update(run_paired(paired, args, log_dir))
        for system in args.systems:
            if system not in results["systems"]:
                results["systems"][system] = run_system(system, args, log_dir)
        results["systems"] = {s: results["systems"][s] for s in args.systems}  # in the usual order
    if "hop" in args.extras:
        _log("per-hop overhead")
        results["hop"] = hop.measure(iterations=300 if args.quick else 2000, repeats=2 if args.quick else 5)
    if "rayhop" in args.extras:
        _log("Ray hop (driver -> actor -> driver) and graphserve's per-node cost on Ray, fused and unfused")
        from . import cluster

        try:
            results["rayhop"] = cluster.measure_hop(count=50 if args.quick else 200)
        except Exception as exc:  # Ray missing or failing: the row says n/a, the rest of the run stands
            results["rayhop"] = {"error": f"{type(exc).__name__}: {exc}"}
    if "coldstart" in args.extras:
        _log("cold start")
        try:
            results["coldstart"] = coldstart.measure(runs=1 if args.quick else 3, idle_s=0.5 if args.quick else 2.0)
        except RuntimeError as exc:
            results["coldstart"] = {"error": str(exc)}
    results["load"]["after"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    if args.merge_into is not None:
        results = merged(orjson.loads(args.merge_into.read_bytes()), results)
    results["targets"] = report.evaluate_targets(results)
    table = report.markdown(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    args.out.with_suffix(".md").write_text(table)
    print(table)
    _log(f"wrote {args.out} and {args.out.with_suffix('.md')} in {results['elapsed_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
