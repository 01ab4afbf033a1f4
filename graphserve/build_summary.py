"""The readable summary ``graphserve build`` prints (with rich): the graph's nodes,
stages, deployments and warnings."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from graphserve.plan import Plan


def console() -> Console:
    """A console on stdout, wide enough for the tables when stdout is a pipe or a file."""
    from rich.console import Console

    # rich assumes 80 columns when stdout is not a terminal.
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
    print_fusion(plan, console)

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


def print_fusion(plan: Plan, console: Console) -> None:
    """Actor fusion: each fused group (one Ray actor per replica) and why, then the neighbours kept apart."""
    from rich.markup import escape
    from rich.table import Table

    fusion = plan.fusion
    if fusion is None or not (fusion.groups or fusion.kept_apart):
        return
    table = Table(title="actor fusion (Ray backend)", title_justify="left")
    for column in ("group", "deployments", "hops saved", "why"):
        table.add_column(column)
    for group in fusion.groups:
        table.add_row(
            escape(group.name), escape(", ".join(group.deployments)), str(group.hops_saved), escape(group.reason)
        )
    for kept in fusion.kept_apart:
        table.add_row("kept apart", escape(" / ".join(kept.deployments)), "0", escape(kept.reason))
    console.print(table)


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


def print_slo(plan: Plan, console: Console) -> None:
    """The SLO planner's choices beside the user's values, and its predictions."""
    from rich.table import Table

    if plan.slo is None or plan.prediction is None:
        return
    slo, pred = plan.slo, plan.prediction
    table = Table(title=f"planned for p99 {slo.p99_s * 1000:g} ms at {slo.rate_rps:g} req/s")
    for column in ("deployment", "value", "chosen", "source", "reason"):
        table.add_column(column)
    for dep in plan.deployments:
        for choice in dep.choices:
            reason = choice.reason if choice.source != "planned" else "see below"
            table.add_row(
                dep.name,
                choice.field,
                f"{choice.value:g}" if isinstance(choice.value, float) else str(choice.value),
                choice.source,
                reason or "",
            )
    console.print(table)
    for dep in plan.deployments:
        if dep.reason:
            console.print(f"  {dep.reason}")
    nodes = Table(title="predicted latency (simulator)")
    for column in ("node", "budget ms", "p50 ms", "p99 ms"):
        nodes.add_column(column)
    for node in plan.nodes:
        if node.predicted is not None:
            budget = f"{node.latency_budget_s * 1000:.1f}" if node.latency_budget_s is not None else "-"
            nodes.add_row(node.id, budget, f"{node.predicted.p50_s * 1000:.1f}", f"{node.predicted.p99_s * 1000:.1f}")
    nodes.add_row("end to end", f"{slo.p99_s * 1000:.1f}", f"{pred.p50_s * 1000:.1f}", f"{pred.p99_s * 1000:.1f}")
    console.print(nodes)
    placed: dict[str, list[str]] = {}
    for r in plan.replicas:
        placed.setdefault(r.node, []).append(f"{r.deployment}[{r.index}]")
    for node_name, replicas in sorted(placed.items()):
        console.print(f"  {node_name}: {', '.join(replicas)}")
