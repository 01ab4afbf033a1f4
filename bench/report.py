"""Targets, tables and machine facts for a benchmark run (pure functions of the results).

``evaluate_targets(results)`` gives one row per target of issue 8: the measured figure,
the bound, and ``passed`` (True/False; None where a system or figure was not measured).
``markdown(results)`` renders the tables the README's Performance section shows.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any

from . import costs
from .servers import LABELS, ROOT, SYSTEMS

PACKAGES = ("graphserve", "ray", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "pydantic")


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "wrk": _first_line(["wrk", "-v"]),
        "git_commit": _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(_first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])),
    }


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


# -- reading figures ----------------------------------------------------------------------
def _workload(results: dict, system: str, workload: str) -> dict | None:
    sysres = results.get("systems", {}).get(system)
    if not sysres:
        return None
    found: dict | None = sysres.get("workloads", {}).get(workload)
    return found


def closed(results: dict, system: str, workload: str, connections: int) -> dict | None:
    w = _workload(results, system, workload)
    if not w:
        return None
    m: dict | None = w.get("closed", {}).get(str(connections))
    return m if m and "rps" in m else None


def peak_rps(results: dict, system: str, workload: str) -> float | None:
    w = _workload(results, system, workload)
    if not w:
        return None
    values = [m["rps"] for m in w.get("closed", {}).values() if m and "rps" in m and not m.get("error_count")]
    return max(values) if values else None


def worst_ratio(results: dict, system: str, baseline: str, workload: str) -> float | None:
    """The lowest req/s ratio of ``system`` to ``baseline`` over the connection counts both ran."""
    mine, theirs = _workload(results, system, workload), _workload(results, baseline, workload)
    if not mine or not theirs:
        return None
    ratios = []
    for conns, m in mine.get("closed", {}).items():
        other = theirs.get("closed", {}).get(conns)
        if m and other and "rps" in m and "rps" in other and not m.get("error_count"):
            ratio = _ratio(m["rps"], other["rps"])
            if ratio is not None:
                ratios.append(ratio)
    return min(ratios) if ratios else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _row(figure: str, target: str, measured: float | None, bound: float, unit: str, at_least: bool, note: str = ""):
    passed = None if measured is None else (measured >= bound if at_least else measured <= bound)
    return {
        "figure": figure,
        "target": target,
        "measured": None if measured is None else round(measured, 3),
        "bound": round(bound, 3),
        "unit": unit,
        "passed": passed,
        "note": note,
    }


def evaluate_targets(results: dict) -> list[dict]:
    rows = []
    w1_local = peak_rps(results, "local", "W1")
    rows.append(
        _row(
            "W1 req/s, local / raw Starlette",
            ">= 0.7x",
            _ratio(w1_local, peak_rps(results, "starlette", "W1")),
            0.7,
            "x",
            True,
            "peak req/s over the closed-loop connection counts",
        )
    )
    w1_rayserve = peak_rps(results, "rayserve", "W1")
    rows.append(_row("W1 req/s, local / Ray Serve", ">= 30x", _ratio(w1_local, w1_rayserve), 30, "x", True))
    rows.append(
        _row(
            "W2 req/s, local / raw Starlette",
            ">= 0.6x",
            _ratio(peak_rps(results, "local", "W2"), peak_rps(results, "starlette", "W2")),
            0.6,
            "x",
            True,
        )
    )
    for workload, label in (("W1", "no-op"), ("W2", "chain of 3"), ("W3", "fan-out 3x10 ms")):
        rows.append(
            _row(
                f"{workload} ({label}) req/s at every connection count, local / raw Starlette",
                ">= 0.95x",
                worst_ratio(results, "local", "starlette", workload),
                0.95,
                "x",
                True,
                "the lowest ratio over the closed-loop connection counts (issue 12)",
            )
        )
    w3 = closed(results, "local", "W3", 1)
    slowest = costs.FANOUT_S * 1000
    rows.append(
        _row(
            "W3 p50 at 1 connection, local",
            f"<= {slowest + 1.5:g} ms",
            w3["latency_ms"]["p50"] if w3 else None,
            slowest + 1.5,
            "ms",
            False,
            "slowest branch (10 ms) + 1.5 ms",
        )
    )
    w4 = closed(results, "local", "W4", 64)
    theory = costs.theoretical_batch_rps()
    rows.append(
        _row(
            "W4 GPU-like req/s at 64 connections, local",
            f">= 0.9 x {theory:.0f} = {0.9 * theory:.0f} req/s",
            w4["rps"] if w4 else None,
            0.9 * theory,
            "req/s",
            True,
            f"theoretical max 32 / (2 ms + 0.5 ms x 32) = {theory:.0f} req/s",
        )
    )
    w5 = closed(results, "local", "W5", 1)
    ideal = costs.conditional_ideal_s() * 1000
    rows.append(
        _row(
            "W5 mean latency, local",
            f"<= 1.3 x {ideal:g} = {1.3 * ideal:.2f} ms",
            w5["latency_ms"]["mean"] if w5 else None,
            1.3 * ideal,
            "ms",
            False,
            "closed loop, 1 connection; cheap 2 ms + 10% x expensive 20 ms",
        )
    )
    hop = results.get("hop") or {}
    for kind, label, bound in (("graph", "graph nodes", 3.0), ("handle", "handle calls", 5.0)):
        rows.append(
            _row(
                f"per-hop overhead, local ({label})",
                f"<= {bound:g} us/node",
                hop.get(kind, {}).get("us_per_node"),
                bound,
                "us",
                False,
                "in process, CPU time, slope over chains of 1-16 no-op nodes (issue 12)",
            )
        )
    cold = results.get("coldstart") or {}
    rows.append(
        _row(
            "cold start, local, no torch",
            "<= 1.5 s",
            cold.get("ready_s_median"),
            1.5,
            "s",
            False,
            "graphserve deploy to first 200 (median)",
        )
    )
    rows.append(
        _row(
            "idle memory, local, no torch",
            "<= 150 MB RSS",
            cold.get("idle_rss_mb"),
            150.0,
            "MB",
            False,
            f"PSS {cold.get('idle_pss_mb')} MB; torch loaded: {cold.get('torch_loaded')}",
        )
    )
    for figure_name, bound, measured, unit, note in (
        (
            "cold start, local (issue 12)",
            0.3,
            cold.get("ready_s_median"),
            "s",
            "graphserve deploy to first 200 (median)",
        ),
        ("idle memory, local (issue 12)", 50.0, cold.get("idle_rss_mb"), "MB", "RSS of the deploy process tree"),
        (
            "import graphserve.runtime (issue 12)",
            0.1,
            cold.get("import_runtime_s"),
            "s",
            "fresh interpreter, median of 5",
        ),
    ):
        rows.append(_row(figure_name, f"<= {bound:g} {unit}", measured, bound, unit, False, note))
    for wid in ("W1", "W2", "W3", "W4"):
        rows.append(
            _row(
                f"{wid} req/s, graphserve Ray / Ray Serve",
                ">= 5x",
                _ratio(peak_rps(results, "ray", wid), peak_rps(results, "rayserve", wid)),
                5.0,
                "x",
                True,
                "peak req/s over the closed-loop connection counts (issue 17)",
            )
        )
    rows.append(
        _row(
            "W2 (chain of 3) req/s / W1 req/s, graphserve Ray",
            ">= 0.8x",
            _ratio(peak_rps(results, "ray", "W2"), peak_rps(results, "ray", "W1")),
            0.8,
            "x",
            True,
            "the chain runs as one fused actor: one Ray hop, not three (issue 17)",
        )
    )
    rows += _rayhop_rows(results.get("rayhop") or {})
    return rows


def _rayhop_rows(rayhop: dict) -> list[dict]:
    """A Ray hop's floor and what graphserve pays per node on Ray (``python -m bench --only rayhop``)."""
    roundtrip = rayhop.get("ray_roundtrip_ms")
    floor = f"{roundtrip:.3g} ms" if roundtrip else "-"
    return [
        _row(
            "per-hop overhead, Ray backend, unfused (graph nodes) / a raw Ray actor round trip",
            "<= 1.5x",
            _ratio(rayhop.get("per_node_ms"), roundtrip),
            1.5,
            "x",
            False,
            f"a driver -> actor -> driver no-op is {floor}: every unfused hop pays at least that (issue 17)",
        ),
        _row(
            "per-hop overhead, Ray backend, fused (graph nodes) / a raw Ray actor round trip",
            "<= 0.25x",
            _ratio(rayhop.get("per_node_ms_fused"), roundtrip),
            0.25,
            "x",
            False,
            "fused members call each other in process: no Ray hop between them (issue 17)",
        ),
    ]


# -- markdown -------------------------------------------------------------------------------
def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def markdown(results: dict) -> str:
    systems = [s for s in SYSTEMS if s in results.get("systems", {})]
    workloads = results.get("config", {}).get("workloads", [])
    conns = results.get("config", {}).get("connections", [])
    lines = []
    if systems and workloads:
        lines += [
            "Closed loop (wrk): req/s, and p50 latency in ms",
            "",
            "| workload | conns | " + " | ".join(LABELS[s] for s in systems) + " |",
            "|---|---:|" + "---:|" * len(systems),
        ]
        for wid in workloads:
            for c in conns:
                cells = []
                for s in systems:
                    m = closed(results, s, wid, c)
                    err = _workload(results, s, wid) or {}
                    if m is None:
                        cells.append("error" if err.get("error") or s in _failed(results) else "-")
                        continue
                    cell = f"{_fmt(m['rps'], 0)} ({_fmt(m['latency_ms']['p50'], 2)})"
                    if m.get("error_count"):
                        cell += f" [{m['error_count']} err]"
                    cells.append(cell)
                lines.append(f"| {wid} | {c} | " + " | ".join(cells) + " |")
        for rate in results.get("config", {}).get("rates", []):
            key = f"{rate:g}"
            lines += [
                "",
                f"Fixed rate (open loop, {key} req/s, latency from the intended send time): p50 / p99 / mean ms",
                "",
                "| workload | " + " | ".join(LABELS[s] for s in systems) + " |",
                "|---|" + "---:|" * len(systems),
            ]
            for wid in workloads:
                cells = []
                for s in systems:
                    o = ((_workload(results, s, wid) or {}).get("open") or {}).get(key) or {}
                    lat = o.get("latency_ms") or {}
                    if o.get("skipped"):
                        cells.append("over capacity")
                        continue
                    if not lat:
                        cells.append("-")
                        continue
                    cell = f"{_fmt(lat['p50'], 2)} / {_fmt(lat['p99'], 2)} / {_fmt(lat['mean'], 2)}"
                    if o.get("error_count"):
                        cell += f" [{o['error_count']} err]"
                    cells.append(cell)
                lines.append(f"| {wid} | " + " | ".join(cells) + " |")
    hop = results.get("hop")
    if hop and "lengths" in hop:
        lines += ["", "Per-hop overhead, local runtime, in process (us per request for chains of N no-op nodes)", ""]
        lines += ["| chain | " + " | ".join(f"N={n}" for n in hop["lengths"]) + " | slope per node |"]
        lines += ["|---|" + "---:|" * (len(hop["lengths"]) + 1)]
        for kind in ("graph", "handle"):
            k = hop[kind]
            lines.append(
                f"| {kind} | " + " | ".join(_fmt(v, 1) for v in k["us_per_request"]) + f" | {k['us_per_node']:.2f} us |"
            )
    targets = results.get("targets") or []
    if targets:
        lines += ["", "| target | bound | measured | pass |", "|---|---|---:|:---:|"]
        for t in targets:
            mark = {True: "pass", False: "**FAIL**", None: "n/a"}[t["passed"]]
            measured = "-" if t["measured"] is None else f"{t['measured']:,.3g} {t['unit']}"
            lines.append(f"| {t['figure']} | {t['target']} | {measured} | {mark} |")
    m = results.get("machine")
    load = results.get("load", {})
    if m:
        pk = m["packages"]
        lines += [
            "",
            f"Machine: {m['cpu']}, {m['usable_cores']} cores, {m['memory_gb']} GB, Python {m['python']}, "
            f"graphserve {pk.get('graphserve')} ({m.get('git_commit')}{', dirty' if m.get('git_dirty') else ''}), "
            f"ray {pk.get('ray')}, starlette {pk.get('starlette')}, uvicorn {pk.get('uvicorn')}, {m.get('wrk')}. "
            f"Load average (1/5/15 min) before: {load.get('before')}, after: {load.get('after')}.",
        ]
    return "\n".join(lines) + "\n"


def _failed(results: dict) -> set[str]:
    return {s for s, r in results.get("systems", {}).items() if r.get("error")}
