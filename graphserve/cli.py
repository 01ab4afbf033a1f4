"""The ``graphserve`` command line: ``build``, ``render``, ``deploy``, ``call``, ``profile`` and ``simulate``.

    graphserve build module:app [-o plan.json] [--render graph.svg] [--cluster cpus=8,gpus=2|detect|none]
    graphserve render module:app|plan.json -o graph.svg|png|dot
    graphserve deploy module:app|plan.json ... [--backend local|ray] [--port 8000]
    graphserve call URL|module:app '{"x": 1}'
    graphserve delete NAME [--address auto]
    graphserve profile module:app --requests requests.jsonl [-o profile.json]
    graphserve simulate plan.json --profile profile.json --rate 100 [--json]

Every command reads its target with the one plan loader (:func:`graphserve.targets.load_plan`)
and reports a failure with the one error printer (:func:`report`): every diagnostic of an
invalid graph with its file:line, else ``error: <message>``, never a traceback. Every
handler returns the exit status: 0 on success, 1 when the graph or the request failed,
2 for bad command-line usage. What a command needs (the compiler, the runtime, rich) is
imported when it runs; ``profile`` and ``simulate`` live in :mod:`graphserve.profile_cli`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError, GraphValidationError, RequestError
from graphserve.runtime import http_defaults

if TYPE_CHECKING:
    from graphserve.plan import Plan
    from graphserve.replan import ServerMeasurements
    from graphserve.runtime.http_server import Server

RENDER_FORMATS = ("svg", "png", "dot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphserve", description="Compile, draw, serve and call dataflow graphs of ML models."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    build = commands.add_parser("build", help="validate and plan a graph; print a summary")
    build.add_argument(
        "target", nargs="?", help="module:app or path/to/file.py:app (with --from-metrics: default the served plan)"
    )
    build.add_argument("-o", "--output", help="write the plan as JSON to this file")
    build.add_argument("--render", metavar="FILE", help="also draw the graph (.svg, .png or .dot)")
    build.add_argument(
        "--cluster",
        default="detect",
        help="cluster to place replicas on: 'cpus=8,gpus=2', 'nodes=FILE' (JSON list of nodes: name, cpus, gpus, "
        "address, labels), 'ray:auto' (the live Ray cluster's nodes), 'detect' (this machine; default) or 'none' "
        "(no check)",
    )
    build.add_argument("--slo-p99-ms", type=float, help="plan for this p99 latency (ms) at --rate")
    build.add_argument("--rate", type=float, help="requests per second the SLO must hold at")
    build.add_argument("--profile", help="profile.json from `graphserve profile` (else measured with --requests)")
    build.add_argument("--requests", help="JSON Lines sample requests to profile with when no --profile is given")
    build.add_argument(
        "--from-metrics",
        metavar="URL",
        help="re-plan for what the server at URL measured (its observed rate; its plan's SLO p99) "
        "from --profile or --requests",
    )
    build.add_argument("--graph", help="with --from-metrics: the served graph to re-plan (default: the only one)")
    build.add_argument(
        "--no-fuse",
        action="store_true",
        help="no actor fusion: every deployment gets Ray actors of its own (the plan says why nothing is fused)",
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
    deploy.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (ray backend): every deploy given an address shares the graph's replicas "
        "with the other ingress processes serving it (see graphserve delete)",
    )
    deploy.add_argument("--namespace", default=None, help="Ray namespace of shared graphs (default: graphserve)")
    deploy.add_argument("--host", default=http_defaults.HOST)
    deploy.add_argument("--port", type=int, default=http_defaults.PORT)
    deploy.add_argument(
        "--token-file",
        metavar="PATH",
        help="require 'Authorization: Bearer <token>' with the token read from this file "
        "(default: $GRAPHSERVE_TOKEN_FILE, else $GRAPHSERVE_TOKEN)",
    )
    deploy.add_argument(
        "--token",
        help="the token itself; other users can read a command line (ps): prefer --token-file or $GRAPHSERVE_TOKEN",
    )
    deploy.add_argument("--timeout-s", type=float, default=None, help="deadline for graphs that set none")
    deploy.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,  # the server's: one constant
        help=f"largest accepted request body (default {http_defaults.mib(http_defaults.MAX_BODY_BYTES)})",
    )
    deploy.add_argument("--max-in-flight", type=int, default=None, help="requests one graph runs at once (503 above)")
    for flag, default, text in (
        ("--shutdown-timeout-s", http_defaults.SHUTDOWN_TIMEOUT_S, "in-flight requests may finish on SIGTERM"),
        ("--header-timeout-s", http_defaults.HEADER_TIMEOUT_S, "time for a request's headers (408 past it)"),
        ("--body-timeout-s", http_defaults.BODY_TIMEOUT_S, "time for a request's body (408 past it)"),
        ("--keep-alive-s", http_defaults.KEEP_ALIVE_S, "an idle connection is closed after"),
    ):
        deploy.add_argument(flag, type=float, default=None, help=f"{text} (default {default:g}s)")
    deploy.add_argument(
        "--max-connections", type=int, default=None, help="open connections at most (default: half the fd limit)"
    )
    deploy.add_argument(
        "--drift-window-s",
        type=float,
        default=None,
        help="how long a graph planned for an SLO must leave its planned rate or p99 to count as drift (default 30)",
    )
    deploy.add_argument(
        "--cluster",
        default=None,
        help="cluster to check placements against: default 'detect' (this machine) on the local backend; "
        "on Ray the backend checks the Ray cluster's resources",
    )
    deploy.set_defaults(handler=deploy_command)

    delete = commands.add_parser("delete", help="remove a graph's shared replicas from a Ray cluster")
    delete.add_argument("name", help="the graph's name")
    delete.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    delete.add_argument("--namespace", default=None, help="Ray namespace (default: graphserve)")
    delete.set_defaults(handler=delete_command)

    call = commands.add_parser("call", help="send one request to a served graph (URL) or run it in process")
    call.add_argument("target", help="http(s)://host:port/route, module:app or plan.json")
    call.add_argument("body", nargs="?", default="{}", help="the request as JSON ('-': read stdin; default {})")
    call.add_argument("--timeout-s", type=float, default=None)
    call.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    call.add_argument(
        "--token-file",
        metavar="PATH",
        help="send 'Authorization: Bearer <token>' read from this file (default: $GRAPHSERVE_TOKEN_FILE, "
        "else $GRAPHSERVE_TOKEN)",
    )
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


# -- the error printer and the plan loader every command shares --------------------------
def report(exc: GraphError) -> None:
    """Print ``exc`` on stderr: every diagnostic (with its file:line) of an invalid graph, else
    ``error: <message>``; never a traceback."""
    if isinstance(exc, GraphValidationError):
        count = len(exc.diagnostics)
        head = f"graph {exc.graph!r} is invalid" if exc.graph else "graph is invalid"
        print(f"{head}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        for diagnostic in exc.diagnostics:
            print(diagnostic.format(), file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)


def _load_plan(target: str, cluster: str | None) -> Plan | int:
    """The plan of ``target`` (an app, validated and planned, or a plan file); else the exit
    status, with the error reported."""
    from graphserve.targets import cluster_option, load_plan

    try:
        checked = cluster_option(cluster)  # ray:auto is read here, once
    except ValueError as exc:
        print(f"error: --cluster {cluster!r}: {exc}", file=sys.stderr)
        return 2
    except GraphError as exc:
        report(exc)
        return 1
    try:
        return load_plan(target, checked)
    except GraphError as exc:
        report(exc)
        return 1


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
    from graphserve.build_summary import console, print_slo, print_summary

    if args.from_metrics is not None:
        replanned = _replan_from_metrics(args)
        if isinstance(replanned, int):
            return replanned
        plan = replanned
    elif args.target is None:
        print("error: build needs a TARGET (or --from-metrics URL)", file=sys.stderr)
        return 2
    else:
        loaded = _load_plan(args.target, args.cluster)
        if isinstance(loaded, int):
            return loaded
        plan = loaded
    if args.from_metrics is None and (args.slo_p99_ms is not None or args.rate is not None):
        planned = _plan_slo(plan, args)
        if isinstance(planned, int):
            return planned
        plan = planned
    if args.no_fuse:
        from graphserve.compiler.fusion import fuse

        fuse(plan, enabled=False)
    print_summary(plan, console())
    print_slo(plan, console())
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


def _replan_from_metrics(args: argparse.Namespace) -> Plan | int:
    """``--from-metrics URL``: the SLO planner's plan for the rate the server measured."""
    from graphserve.replan import read_server

    try:
        measured = read_server(args.from_metrics, args.graph)
    except GraphError as exc:
        report(exc)
        return 1
    plan = measured.plan
    if args.target is not None:  # the graph's code as it is now, planned for what was measured
        loaded = _load_plan(args.target, args.cluster)
        if isinstance(loaded, int):
            return loaded
        plan = loaded
    print(
        f"measured at {args.from_metrics}: {measured.rate_rps:.1f} req/s, p99 {measured.p99_s * 1000:.1f} ms "
        f"(planned for {measured.slo.rate_rps:g} req/s, p99 {measured.slo.p99_s * 1000:g} ms)"
    )
    if args.rate is None:
        args.rate = round(measured.rate_rps, 3)
    if args.slo_p99_ms is None:
        args.slo_p99_ms = measured.slo.p99_s * 1000
    return _plan_slo(plan, args, measured)


def _plan_slo(plan: Plan, args: argparse.Namespace, measured: ServerMeasurements | None = None) -> Plan | int:
    """``--slo-p99-ms``/``--rate``: the SLO planner's plan, or the exit status with the error reported.
    With ``measured`` (``--from-metrics``), the profile's node costs are first corrected by the
    latencies the server measured."""
    from graphserve.plan import SLOPlan
    from graphserve.planning import batch_sizes, plan_for_slo

    if args.slo_p99_ms is None or args.rate is None or not args.slo_p99_ms > 0 or not args.rate > 0:
        print("error: --slo-p99-ms and --rate go together, both positive numbers", file=sys.stderr)
        return 2
    try:
        slo = SLOPlan(p99_s=args.slo_p99_ms / 1000, rate_rps=args.rate)
        profile: Any = args.profile
        if profile is None and args.requests is not None:  # profile first
            from graphserve.profiling import profile as measure

            profile = measure(plan, args.requests, duration_s=10.0, batch_sizes=batch_sizes(plan))
        if measured is not None and profile is not None:
            profile = _corrected(profile, measured)
        return plan_for_slo(plan, slo, profile=profile)
    except GraphError as exc:
        report(exc)
        return 1


def _corrected(profile: Any, measured: ServerMeasurements) -> Any:
    """``profile`` (a path or a Profile) with each node's costs scaled by what the server measured."""
    from graphserve.compiler.observed import corrected_profile
    from graphserve.compiler.profile import Profile

    loaded = Profile.load(profile) if isinstance(profile, str) else profile
    if not measured.node_latency:
        return loaded
    corrected, factors = corrected_profile(measured.plan, loaded, measured.rate_rps, measured.node_latency)
    for node, factor in factors.items():
        print(f"  {node}: costs x{factor:g} (the server's latencies over the profile's)")
    if not factors:
        print("  node latencies as profiled (within 10%): profile used as it is")
    return corrected


def render_command(args: argparse.Namespace) -> int:
    """Draw ``args.target`` (an app or a plan file) into ``args.output``."""
    plan = _load_plan(args.target, args.cluster)
    if isinstance(plan, int):
        return plan
    return _render_to(plan, args.output, args.format)


def _render_to(plan: Plan, output: str, fmt: str | None) -> int:
    from graphserve.compiler.render import render_to_file

    try:
        path = render_to_file(plan, output, fmt)
    except GraphError as exc:
        report(exc)
        return 1
    print(f"graph drawn to {path}")
    return 0


# -- deploy ------------------------------------------------------------------------------
def deploy_command(args: argparse.Namespace) -> int:
    """``graphserve deploy targets... [--backend] [--address] [--host] [--port] [--token] ...``:
    ``gs.serve`` until SIGTERM/SIGINT."""
    from graphserve.registry import resolve_token
    from graphserve.serving import serve

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = getattr(args, "backend", None) or "local"
    # On Ray the backend checks the plan against the Ray cluster itself, not this machine.
    options: dict[str, Any] = {
        "cluster": getattr(args, "cluster", None) or ("detect" if backend == "local" else None),
        "on_ready": _announce,
    }
    for name in (
        "timeout_s",
        "max_body_bytes",
        "max_in_flight",
        "shutdown_timeout_s",
        "drift_window_s",
        "header_timeout_s",
        "body_timeout_s",
        "keep_alive_s",
        "max_connections",
    ):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    address = getattr(args, "address", None)
    if address and backend == "ray":  # on a cluster: one replica set, shared by every ingress of the graph
        namespace = getattr(args, "namespace", None)
        options["backend_options"] = {"address": address, "shared": True, "namespace": namespace}
    elif address:
        options["backend_options"] = {"address": address}
    port = getattr(args, "port", None)
    try:
        serve(
            getattr(args, "targets", None) or getattr(args, "target", None),
            host=getattr(args, "host", None) or http_defaults.HOST,
            port=http_defaults.PORT if port is None else int(port),
            backend=backend,
            token=resolve_token(getattr(args, "token", None), getattr(args, "token_file", None)),
            **options,
        )
    except GraphError as exc:
        report(exc)
        return 1
    print("graphserve: stopped", flush=True)
    return 0


def delete_command(args: argparse.Namespace) -> int:
    """``graphserve delete NAME [--address auto] [--namespace]``: remove a shared graph's replicas."""
    from graphserve.runtime.ray_backend import SHARED_NAMESPACE, connect_briefly
    from graphserve.runtime.ray_controller import delete_graph

    namespace = args.namespace or SHARED_NAMESPACE
    try:
        with connect_briefly(args.address, namespace):
            removed = delete_graph(args.name, namespace)
    except GraphError as exc:
        report(exc)
        return 1
    print(f"graphserve: graph {args.name!r} deleted ({removed} replicas)")
    return 0


def _announce(server: Server) -> None:
    for name, url in server.routes.items():
        print(f"graphserve: graph {name!r} at POST {url}", flush=True)
    print(f"graphserve: ready at {server.url} (metrics at {server.url}/-/metrics)", flush=True)
    print(f"graphserve: see the graphs run at {server.page_url}", flush=True)


# -- call --------------------------------------------------------------------------------
def call_command(args: argparse.Namespace) -> int:
    """``graphserve call URL|module:app|plan.json '<json>'``: print the result; exit 1 on an error."""
    from graphserve.runtime.encoding import JSONDecodeError, loads

    target: str = args.target
    raw = getattr(args, "body", None)
    if raw is None or raw == "-":
        raw = sys.stdin.read()
    try:
        request = loads(raw) if raw.strip() else None
    except JSONDecodeError as exc:
        print(f"error: the request body is not JSON: {exc}", file=sys.stderr)
        return 2
    timeout_s = getattr(args, "timeout_s", None)
    if target.startswith(("http://", "https://")):
        from graphserve.registry import resolve_token

        try:
            headers = _parse_headers(getattr(args, "header", None) or [])
            token = resolve_token(None, getattr(args, "token_file", None))
        except GraphError as exc:
            report(exc)
            return 2
        return _call_url(target, raw.encode(), headers, timeout_s, token)
    return _call_in_process(target, request, timeout_s, getattr(args, "cluster", None) or "detect")


def _parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise GraphError(f"header {item!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def _call_url(url: str, body: bytes, headers: dict[str, str], timeout_s: float | None, token: str | None) -> int:
    import http.client

    lowered = {k.lower() for k in headers}
    if "content-type" not in lowered:
        headers["Content-Type"] = "application/json"
    if "authorization" not in lowered and token:
        headers["Authorization"] = f"Bearer {token}"
    if timeout_s is not None and "x-request-timeout-s" not in lowered:
        headers["X-Request-Timeout-S"] = str(timeout_s)
    try:
        status, text = _post(url, body, headers, timeout_s + 10 if timeout_s is not None else 300.0)
    except (OSError, http.client.HTTPException) as exc:
        print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if 200 <= status < 300:
        print(text)
        return 0
    print(f"error: HTTP {status}: {text}", file=sys.stderr)
    return 1


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """POST ``body``; the answer even when the server answered early and closed (a 413 before
    the whole body was sent): a failed send is followed by reading what the server said."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        try:
            connection.request("POST", path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer may be waiting (read below)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def _call_in_process(target: str, request: Any, timeout_s: float | None, cluster: Any) -> int:
    from graphserve.api import GraphHandle
    from graphserve.runtime.encoding import dumps
    from graphserve.runtime.http_errors import request_error

    plan = _load_plan(target, cluster)
    if isinstance(plan, int):
        return plan
    try:
        handle = GraphHandle(plan)
    except GraphError as exc:
        report(exc)
        return 1
    try:
        result = handle.call(request, timeout_s)
    except RequestError as exc:
        status, body, _ = request_error(exc)
        print(f"error: {status}: {body.decode()}", file=sys.stderr)
        return 1
    finally:
        handle.shutdown()
    try:
        print(dumps(result).decode())
    except TypeError as exc:
        print(f"error: the output cannot be written as JSON: {exc}", file=sys.stderr)
        return 1
    return 0
