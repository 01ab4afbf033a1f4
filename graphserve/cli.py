"""The ``graphserve`` command line: ``build``, ``render``, ``deploy``, ``call``, ``profile`` and ``simulate``.

    graphserve build module:app [-o plan.json] [--render graph.svg] [--cluster cpus=8,gpus=2|detect|none]
    graphserve render module:app|plan.json -o graph.svg|png|dot
    graphserve deploy module:app|plan.json ... [--backend local|ray] [--port 8000]
    graphserve call URL|module:app '{"x": 1}'
    graphserve profile module:app --requests requests.jsonl [-o profile.json]
    graphserve simulate plan.json --profile profile.json --rate 100 [--json]

``build`` and ``render`` live here; ``deploy`` and ``call`` are in
:mod:`graphserve.serving`, ``profile`` and ``simulate`` in :mod:`graphserve.profile_cli`,
imported only when those commands run. Every handler returns
the exit status: 0 on success, 1 when the graph or the request failed (diagnostics are
printed, never a traceback), 2 for bad command-line usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError, GraphValidationError

if TYPE_CHECKING:
    from rich.console import Console

    from graphserve.plan import Plan

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
RENDER_FORMATS = ("svg", "png", "dot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphserve", description="Compile, draw, serve and call dataflow graphs of ML models."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    build = commands.add_parser("build", help="validate and plan a graph; print a summary")
    build.add_argument("target", help="module:app or path/to/file.py:app")
    build.add_argument("-o", "--output", help="write the plan as JSON to this file")
    build.add_argument("--render", metavar="FILE", help="also draw the graph (.svg, .png or .dot)")
    build.add_argument(
        "--cluster",
        default="detect",
        help="cluster to place replicas on: 'cpus=8,gpus=2', 'detect' (this machine; default) or 'none' (no check)",
    )
    build.set_defaults(handler=build_command)

    render = commands.add_parser("render", help="draw a graph with graphviz")
    render.add_argument("target", help="module:app, path/to/file.py:app or plan.json")
    render.add_argument("-o", "--output", required=True, help="output file: .svg, .png or .dot")
    render.add_argument("--format", choices=RENDER_FORMATS, help="format (default: from the output's suffix)")
    render.add_argument("--cluster", default="none", help="cluster to plan for when compiling an app (default: none)")
    render.set_defaults(handler=render_command)

    deploy = commands.add_parser("deploy", help="serve graphs over HTTP")
    deploy.add_argument("targets", nargs="+", help="module:app or plan.json (one or more)")
    deploy.add_argument("--backend", choices=("local", "ray"), default="local")
    deploy.add_argument("--address", default=None, help="Ray cluster address (ray backend)")
    deploy.add_argument("--host", default="127.0.0.1")
    deploy.add_argument("--port", type=int, default=8000)
    deploy.add_argument(
        "--token",
        default=os.environ.get("GRAPHSERVE_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (default: $GRAPHSERVE_TOKEN)",
    )
    deploy.add_argument("--timeout-s", type=float, default=None, help="deadline for graphs that set none")
    deploy.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    deploy.add_argument(
        "--cluster",
        default=None,
        help="cluster to check placements against: default 'detect' (this machine) on the local backend; "
        "on Ray the backend checks the Ray cluster's resources",
    )
    deploy.set_defaults(handler=deploy_command)

    call = commands.add_parser("call", help="send one request to a served graph (URL) or run it in process")
    call.add_argument("target", help="http(s)://host:port/route, module:app or plan.json")
    call.add_argument("body", nargs="?", default="{}", help="the request as JSON ('-': read stdin; default {})")
    call.add_argument("--timeout-s", type=float, default=None)
    call.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    call.add_argument("--cluster", default="detect")
    call.set_defaults(handler=call_command)

    from graphserve import profile_cli

    profile_cli.add_commands(commands)
    commands.choices["profile"].set_defaults(handler=profile_command)
    commands.choices["simulate"].set_defaults(handler=simulate_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return status


# -- deploy / call (graphserve.serving) ------------------------------------------------
def deploy_command(args: argparse.Namespace) -> int:
    from graphserve import serving

    status: int = serving.deploy_command(args)
    return status


def call_command(args: argparse.Namespace) -> int:
    from graphserve import serving

    status: int = serving.call_command(args)
    return status


# -- profile / simulate (graphserve.profile_cli) ---------------------------------------
def profile_command(args: argparse.Namespace) -> int:
    plan = _load_plan(args.target, args.cluster)
    if isinstance(plan, int):
        return plan
    from graphserve import profile_cli

    return profile_cli.profile_command(plan, args)


def simulate_command(args: argparse.Namespace) -> int:
    plan = _load_plan(args.target, args.cluster)
    if isinstance(plan, int):
        return plan
    from graphserve import profile_cli

    return profile_cli.simulate_command(plan, args)


# -- build / render --------------------------------------------------------------------
def build_command(args: argparse.Namespace) -> int:
    """Validate and plan ``args.target``; print the summary; write ``-o`` / ``--render``."""
    plan = _load_plan(args.target, args.cluster)
    if isinstance(plan, int):
        return plan
    print_summary(plan, _console())
    if args.output:
        from graphserve.compiler.codes import Code

        try:
            text = plan.to_json()
        except GraphError as exc:
            print(f"error {Code.NOT_SERIALIZABLE}: {exc}", file=sys.stderr)
            return 1
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
        print(f"plan written to {args.output}")
    if args.render:
        status = _render_to(plan, args.render, None)
        if status:
            return status
    return 0


def render_command(args: argparse.Namespace) -> int:
    """Draw ``args.target`` (an app or a plan file) into ``args.output``."""
    plan = _load_plan(args.target, args.cluster)
    if isinstance(plan, int):
        return plan
    return _render_to(plan, args.output, args.format)


def _load_plan(target: str, cluster_arg: str | None) -> Plan | int:
    """The plan of an app (validated and planned) or of a plan file; else the exit status,
    with every diagnostic or the error printed."""
    from graphserve.targets import is_plan_file

    try:
        if is_plan_file(target):
            from graphserve.plan import Plan

            try:
                text = Path(target).read_text(encoding="utf-8")
            except OSError as exc:
                raise GraphError(f"cannot read plan {target!r}: {exc}") from exc
            return Plan.from_json(text)
        try:
            cluster = _cluster_arg(cluster_arg)
        except ValueError as exc:
            print(f"error: --cluster {cluster_arg!r}: {exc}", file=sys.stderr)
            return 2
        return _compile(target, cluster)
    except GraphValidationError as exc:
        _print_diagnostics(exc)
        return 1
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # pydantic's ValidationError: a JSON file that is not a plan
        print(f"error: {target} is not a graphserve plan: {exc}", file=sys.stderr)
        return 1


def _cluster_arg(value: str | None) -> Any:
    """``--cluster``: 'detect', 'none' (no check) or 'cpus=8,gpus=2' (checked here, not at planning)."""
    if value is None or value.strip().lower() in ("none", "off", ""):
        return None
    if value.strip() == "detect":
        return "detect"
    from graphserve.compiler import parse_cluster

    parse_cluster(value)  # raises ValueError for a malformed description
    return value


def _compile(target: str, cluster: Any) -> Plan:
    from graphserve.compiler import compile_app
    from graphserve.targets import load_app

    return compile_app(load_app(target), cluster=cluster)


def _render_to(plan: Plan, output: str, fmt: str | None) -> int:
    from graphserve.compiler.render import render_to_file

    try:
        path = render_to_file(plan, output, fmt)
    except GraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"graph drawn to {path}")
    return 0


def _print_diagnostics(exc: GraphValidationError) -> None:
    """Every diagnostic, one per line (with its file:line), on stderr; no traceback."""
    count = len(exc.diagnostics)
    head = f"graph {exc.graph!r} is invalid" if exc.graph else "graph is invalid"
    print(f"{head}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
    for diagnostic in exc.diagnostics:
        print(diagnostic.format(), file=sys.stderr)


def _console() -> Console:
    from rich.console import Console

    # Wide enough for the tables when stdout is a pipe or a file (rich assumes 80 columns).
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160"))
    return Console(file=sys.stdout, width=width, highlight=False, soft_wrap=False)


def print_summary(plan: Plan, console: Console) -> None:
    """The readable summary of ``graphserve build``: nodes, stages, deployments, warnings."""
    from rich.markup import escape
    from rich.table import Table

    calls = [n for n in plan.nodes if n.kind == "call" and n.deployment]
    console.print(
        f"[bold]graph {escape(plan.name)}[/bold]: {len(plan.nodes)} nodes, {len(calls)} deployment calls, "
        f"{len(plan.stages)} stages, {len(plan.deployments)} deployments, {len(plan.replicas)} replicas"
        + (f", route {escape(plan.route_prefix)}" if plan.route_prefix else "")
        + (f", timeout {plan.timeout_s:g}s" if plan.timeout_s is not None else "")
    )
    if plan.cluster is not None:
        console.print(f"cluster ({plan.cluster.source}): {plan.cluster.cpus:g} cpus, {plan.cluster.gpus:g} gpus")
    else:
        console.print("cluster: not checked")

    nodes = Table(title="nodes", title_justify="left")
    for column in ("stage", "node", "kind", "runs", "type", "runs when", "fused"):
        nodes.add_column(column)
    for node in sorted(plan.nodes, key=lambda n: (n.stage, plan.nodes.index(n))):
        nodes.add_row(
            str(node.stage),
            escape(node.id),
            _kind(node),
            escape(_target(node)),
            escape(node.type),
            escape(guard_text(plan, node.guard)),
            escape(node.fused_reason or "") if node.fused else "",
        )
    console.print(nodes)

    stages = Table(title="stages", title_justify="left")
    stages.add_column("stage")
    stages.add_column("nodes (run concurrently)")
    for index, wave in enumerate(plan.stages):
        stages.add_row(str(index), escape(", ".join(wave)))
    console.print(stages)

    deployments = Table(title="deployments", title_justify="left")
    for column in ("deployment", "import path", "replicas", "cpus", "gpus", "max ongoing", "batching"):
        deployments.add_column(column)
    for dep in plan.deployments:
        deployments.add_row(
            escape(dep.name),
            escape(dep.import_path),
            str(dep.num_replicas),
            f"{dep.resources.num_cpus:g}",
            f"{dep.resources.num_gpus:g}",
            str(dep.max_ongoing_requests),
            escape(
                "; ".join(
                    f"{b.method}: max {b.max_batch_size}, wait {b.batch_wait_timeout_s:g}s, "
                    f"{b.max_concurrent_batches} concurrent"
                    for b in dep.batching
                )
                or "-"
            ),
        )
    console.print(deployments)

    if plan.warnings:
        console.print(f"[yellow]{len(plan.warnings)} warning{'s' if len(plan.warnings) != 1 else ''}:[/yellow]")
        for w in plan.warnings:
            where = f"{w.location}: " if w.location else ""
            about = f"[{w.node}] " if w.node else ""
            console.print(escape(f"  {where}{w.severity} {w.code}: {about}{w.message}"), soft_wrap=True)
            if w.hint:
                console.print(escape(f"      hint: {w.hint}"), soft_wrap=True)
    else:
        console.print("no warnings")


def _kind(node: Any) -> str:
    if node.kind == "call":
        return "glue" if node.function else "deployment"
    return str(node.kind)


def _target(node: Any) -> str:
    if node.kind == "call":
        if node.function:
            return node.function
        return f"{node.deployment}.{node.method}"
    if node.kind == "attr":
        return f".{node.key}" if node.access == "attr" else f"[{node.key!r}]"
    if node.kind == "switch":
        return f"on {node.selector}"
    return ""


def guard_text(plan: Plan, guard: Any) -> str:
    """``switch=value and ... or ...`` for a node's guard ("" when it always runs)."""
    from graphserve.compiler.render import guard_label

    return guard_label(plan, guard)
