"""``graphserve profile`` and ``graphserve simulate``: the command-line side of
:mod:`graphserve.profiling` (a progress bar while profiling, tables of the results).

    graphserve profile TARGET --requests FILE [-o profile.json] [--duration S] [--batch-sizes 1,2,4,8]
    graphserve simulate plan.json|TARGET --profile profile.json --rate R
                        [--arrivals poisson|uniform|FILE] [--duration S] [--seed N] [--timeout-s S] [--json]

Each returns the exit status: 0 on success, 1 when profiling or simulating failed (the
error is printed, never a traceback), 2 for bad command-line usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from graphserve.errors import GraphError

if TYPE_CHECKING:
    from rich.console import Console

    from graphserve.compiler.profile import Distribution, Profile
    from graphserve.compiler.simulate import SimulationResult
    from graphserve.plan import Plan


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``profile`` and ``simulate`` subcommands (handlers set by the caller)."""
    prof = commands.add_parser("profile", help="measure every node of a graph on the local runtime")
    prof.add_argument("target", help="module:app, path/to/file.py:app or plan.json")
    prof.add_argument("--requests", required=True, help="JSON Lines file: one sample request body per line")
    prof.add_argument("-o", "--output", help="write the profile as JSON to this file")
    prof.add_argument("--duration", type=float, default=30.0, help="time box in seconds (default 30)")
    prof.add_argument(
        "--batch-sizes",
        default=None,
        help="batch sizes to time @gs.batch methods at, e.g. 1,2,4,8 (default: powers of two up to max_batch_size)",
    )
    prof.add_argument("--cluster", default="detect", help="as for build (default: detect)")

    sim = commands.add_parser("simulate", help="predict a plan's latency and throughput from a profile")
    sim.add_argument("target", help="plan.json, module:app or path/to/file.py:app")
    sim.add_argument("--profile", required=True, help="a profile written by `graphserve profile -o`")
    sim.add_argument("--rate", type=float, default=None, help="requests per second (poisson and uniform arrivals)")
    sim.add_argument(
        "--arrivals", default="poisson", help="poisson (default), uniform, or a file with one arrival time (s) per line"
    )
    sim.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals (default 10)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--timeout-s", type=float, default=None, help="request deadline (default: the plan's)")
    sim.add_argument("--json", action="store_true", help="print the result as JSON")
    sim.add_argument("--cluster", default="none", help="as for build (default: none)")


def profile_command(plan: Plan, args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from graphserve.profiling import profile

    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()] if args.batch_sizes else None
    except ValueError:
        print(f"error: --batch-sizes {args.batch_sizes!r}: expected integers like 1,2,4,8", file=sys.stderr)
        return 2
    console = _console()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
    with Progress(*columns, TimeElapsedColumn(), console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"profiling {plan.name}", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"profiling {plan.name}: {what}", completed=done, total=total)

        try:
            measured = profile(plan, args.requests, duration_s=args.duration, batch_sizes=sizes, progress=progress)
        except GraphError as exc:
            bar.stop()
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print_profile(measured, console)
    if args.output:
        try:
            Path(args.output).write_text(measured.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
        console.print(f"profile written to {args.output}")
    return 0


def simulate_command(plan: Plan, args: argparse.Namespace) -> int:
    from graphserve.profiling import simulate

    arrivals = args.arrivals
    if arrivals in ("poisson", "uniform") and args.rate is None:
        print(f"error: --rate is needed for {arrivals} arrivals", file=sys.stderr)
        return 2
    try:
        result = simulate(
            plan,
            args.profile,
            args.rate,
            arrivals=arrivals,
            duration_s=args.duration,
            seed=args.seed,
            timeout_s=args.timeout_s,
        )
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(result.to_json())
    else:
        print_result(result, _console())
    return 0


def _console(stderr: bool = False) -> Console:
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def print_profile(measured: Profile, console: Console) -> None:
    """Per node: visit rate, p50/p99 (ms) at each batch size, CPU share; then the switches and warnings."""
    from rich.markup import escape
    from rich.table import Table

    m = measured.machine
    console.print(
        f"[bold]profile of graph {escape(measured.graph)}[/bold]: {measured.requests} of "
        f"{measured.sample_requests} sample requests run; {escape(m.cpu)}, {m.usable_cores}/{m.cores} cores"
        + (f", GPUs: {escape(', '.join(m.gpus))}" if m.gpus else ", no GPU")
    )
    table = Table(title="nodes", title_justify="left")
    for column in ("node", "visit rate", "batch", "timed", "p50 ms", "p99 ms", "cpu share", "runs on"):
        table.add_column(column, justify="left" if column in ("node", "runs on") else "right")
    for node in measured.nodes:
        rows: list[tuple[int | None, Distribution | None]] = [(p.batch_size, p.latency) for p in node.batches]
        rows = rows or [(None, node.latency)]
        for i, (size, dist) in enumerate(rows):
            table.add_row(
                escape(node.node) if i == 0 else "",
                f"{node.visit_rate:.3f}" if i == 0 else "",
                str(size) if size is not None else "-",
                str(dist.count) if dist else "0",
                _ms(dist.p50_s) if dist else "-",
                _ms(dist.p99_s) if dist else "-",
                f"{node.cpu_share:.2f}" if i == 0 else "",
                node.runs_on if i == 0 else "",
            )
        if node.fit is not None:
            table.add_row("", "", "fit", "", f"{_ms(node.fit.fixed_s)} + {_ms(node.fit.per_item_s)} x b", "", "", "")
    console.print(table)
    waited = (
        "not reported by this OS"
        if measured.machine_wait_share is None
        else f"{measured.machine_wait_share:.1%} of the timed calls' wall time (left out)"
    )
    console.print(
        f"runtime's own CPU per request: {measured.request_cpu_s * 1e6:.0f} us; waiting for a core other "
        f"processes held: {waited}"
    )
    for switch in measured.switches:
        arms = ", ".join(f"arm {arm}: {count / switch.evaluations:.1%}" for arm, count in sorted(switch.arms.items()))
        console.print(f"switch {escape(switch.node)}: {escape(arms)} of {switch.evaluations}")
    if measured.warnings:
        console.print(f"[yellow]{len(measured.warnings)} warning{'s' if len(measured.warnings) != 1 else ''}:[/yellow]")
        for warning in measured.warnings:
            console.print(escape(f"  {warning}"), soft_wrap=True)


def print_result(result: SimulationResult, console: Console) -> None:
    """The prediction: throughput, end-to-end latency, failures; per node and per replica tables."""
    from rich.markup import escape
    from rich.table import Table

    lat = result.latency
    console.print(
        f"[bold]graph {escape(result.graph)}[/bold]: {result.requests} requests ({result.arrivals}, "
        f"{result.offered_rps:.1f}/s offered over {result.duration_s:g}s, seed {result.seed})"
    )
    console.print(
        f"predicted throughput {result.throughput_rps:.1f} req/s; latency p50 {_ms(lat.p50_s)} ms, "
        f"p95 {_ms(lat.p95_s)} ms, p99 {_ms(lat.p99_s)} ms; completed {result.completed}, "
        f"rejected (503) {result.rejected}, timed out (504) {result.timed_out}; "
        f"CPU {result.cpu_utilization:.0%}"
    )
    nodes = Table(title="nodes", title_justify="left")
    for column in ("node", "calls", "p50 ms", "p99 ms", "queue wait mean ms", "queue wait p99 ms", "mean batch"):
        nodes.add_column(column, justify="left" if column == "node" else "right")
    for n in result.nodes:
        nodes.add_row(
            escape(n.node),
            str(n.calls),
            _ms(n.latency.p50_s),
            _ms(n.latency.p99_s),
            _ms(n.queue_wait.mean_s),
            _ms(n.queue_wait.p99_s),
            f"{n.mean_batch_size:.1f}" if n.mean_batch_size is not None else "-",
        )
    console.print(nodes)
    replicas = Table(title="replicas", title_justify="left")
    for column in ("deployment", "replica", "utilization", "busy"):
        replicas.add_column(column, justify="left" if column == "deployment" else "right")
    for r in result.replicas:
        replicas.add_row(escape(r.deployment), str(r.index), f"{r.utilization:.0%}", f"{r.busy:.0%}")
    console.print(replicas)
