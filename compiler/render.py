"""Drawing a Plan with graphviz: :func:`to_dot` (DOT text, no package needed) and
:func:`render` / :func:`render_to_file` (svg and png through Graphviz's ``dot`` binary).

A pure function of the Plan, deterministic (same plan, same bytes). What the drawing shows:

* node kinds drawn distinctly (the SVG ``class`` of each node says its kind too):
  input (blue, inverted house), deployment call (yellow rounded box with replicas,
  resources and batching), glue (grey ellipse), switch (orange diamond), field selection
  (plain small ellipse), output (green house);
* stages as clusters (``cluster_stage_N``), in order; the calls of a fused group (actor
  fusion: one Ray actor per replica, ``plan.fusion``) in a box of their own instead
  (``cluster_fused_N``, SVG id ``fused-N``, labelled with the group and the hops it saves);
* edges labelled with the producer's type; switch branch edges name their case;
* guarded (conditional) edges dashed: an edge runs only under some switch outcomes when
  its producer or its consumer has a guard; guarded nodes say when they run;
* stable SVG ids: node ``X`` is ``<g id="node:X">``, the edge from ``A`` to ``B`` is
  ``<g id="edge:A->B">`` (what the live page at ``/-/`` looks nodes up by).

``figures=True`` (the live page's drawing) adds :data:`FIGURE_LINES` placeholder lines
at the end of each deployment node's label, sized for the live figures the page
writes into them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from graphserve.errors import GraphError
from graphserve.plan import GuardTerm, NodePlan, NodeRef, Plan, StructValue

FORMATS = ("dot", "svg", "png")
INSTALL_HINT = "install Graphviz: `apt-get install graphviz` (or `brew install graphviz`), or run `make setup`"
_DOT_TIMEOUT_S = 120.0
#: Placeholder lines (as wide as the figures the live page writes there) ending each
#: deployment node's label when drawn with ``figures=True``; the page replaces their text.
FIGURE_LINES = (
    "0000000 calls, 0000.0 req/s",
    "p50 000.00 ms, p99 000.00 ms",
    "errors 00000, batch 000.0, queue 0000, busy 00/00",
)

_STYLE: dict[str, dict[str, str]] = {
    "input": {"shape": "invhouse", "style": "filled", "fillcolor": "#cfe2f3", "color": "#3d85c6"},
    "deployment": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fff2cc", "color": "#bf9000"},
    "glue": {"shape": "ellipse", "style": "filled", "fillcolor": "#eeeeee", "color": "#666666"},
    "switch": {"shape": "diamond", "style": "filled", "fillcolor": "#fce5cd", "color": "#e69138"},
    "attr": {"shape": "ellipse", "style": "solid", "color": "#999999", "fontsize": "9"},
    "output": {"shape": "house", "style": "filled", "fillcolor": "#d9ead3", "color": "#6aa84f"},
}


def node_kind(node: NodePlan) -> str:
    """input, deployment, glue, switch, attr or output."""
    if node.kind == "call":
        return "glue" if node.function else "deployment"
    return node.kind


def guard_label(plan: Plan, guard: list[list[GuardTerm]] | None) -> str:
    """``switch=value and ... or ...``; "" for a node that always runs."""
    if guard is None:
        return ""
    return " or ".join(" and ".join(f"{t.switch}={_arm(plan, t)}" for t in conj) for conj in guard)


def node_svg_id(node_id: str) -> str:
    """The ``id`` of a node's ``<g>`` element in the SVG."""
    return f"node:{node_id}"


def edge_svg_id(source: str, target: str) -> str:
    """The ``id`` of an edge's ``<g>`` element in the SVG."""
    return f"edge:{source}->{target}"


def to_dot(plan: Plan, figures: bool = False) -> str:
    """The plan as DOT text (``figures``: with the live page's placeholder lines)."""
    lines = [
        f"digraph {_q(plan.name)} {{",
        f"  graph [label={_q(_graph_label(plan))}, labelloc=t, fontname=Helvetica, rankdir=TB, "
        "newrank=true, compound=true];",
        "  node [fontname=Helvetica, fontsize=11];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    groups = plan.fusion.groups if plan.fusion else []
    fused = {name: i for i, g in enumerate(groups) for name in g.deployments}
    by_group: dict[int, list[NodePlan]] = {}
    by_stage: dict[int, list[NodePlan]] = {}
    for node in plan.nodes:
        member_of = fused.get(node.deployment or "") if node.kind == "call" and not node.function else None
        if member_of is not None:
            by_group.setdefault(member_of, []).append(node)
        else:
            by_stage.setdefault(node.stage, []).append(node)
    for stage in sorted(by_stage):
        lines.append(f"  subgraph cluster_stage_{stage} {{")
        lines.append(f'    id="stage-{stage}"; label="stage {stage}"; style="rounded,dashed"; color="#bbbbbb";')
        for node in by_stage[stage]:
            lines.append("    " + _node_line(plan, node, figures))
        lines.append("  }")
    for index, group in enumerate(groups):
        if index not in by_group:
            continue
        label = f"one Ray actor: {group.name} (fused, {group.hops_saved} hop(s) saved)"
        lines.append(f"  subgraph cluster_fused_{index} {{")
        lines.append(
            f'    id="fused-{index}"; label={_q(label)}; tooltip={_q(group.reason)}; '
            'style="rounded,bold"; color="#8e7cc3"; penwidth=2;'
        )
        for node in by_group[index]:
            lines.append("    " + _node_line(plan, node, figures))
        lines.append("  }")
    known = {n.id for n in plan.nodes}
    for node in plan.nodes:
        for source, label in _in_edges(plan, node):
            if source not in known:
                continue
            producer = plan.node(source)
            attrs = {"label": label if label else producer.type}
            if producer.guard is not None or node.guard is not None:
                attrs["style"] = "dashed"
                attrs["class"] = "guarded"
            attrs["id"] = edge_svg_id(source, node.id)
            lines.append(f"  {_q(source)} -> {_q(node.id)} [{_attrs(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(plan: Plan, fmt: str = "svg", figures: bool = False) -> bytes:
    """The drawing in ``fmt`` (dot, svg or png); svg and png run Graphviz's ``dot``.

    ``figures``: room for live figures in deployment nodes (see :data:`FIGURE_LINES`)."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise GraphError(f"cannot draw a graph as {fmt!r}: the formats are {', '.join(FORMATS)}")
    text = to_dot(plan, figures)
    if fmt == "dot":
        return text.encode("utf-8")
    binary = shutil.which("dot")
    if binary is None:
        raise GraphError(f"drawing {fmt} needs Graphviz's `dot` program, which is not installed: {INSTALL_HINT}")
    try:
        done = subprocess.run(
            [binary, f"-T{fmt}"], input=text.encode("utf-8"), capture_output=True, timeout=_DOT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise GraphError(f"Graphviz's dot did not finish drawing graph {plan.name!r} in {_DOT_TIMEOUT_S:g}s") from exc
    except OSError as exc:
        raise GraphError(f"cannot run Graphviz's dot ({binary}): {exc}; {INSTALL_HINT}") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise GraphError(f"Graphviz's dot failed drawing graph {plan.name!r} (exit {done.returncode}): {message}")
    return done.stdout


def render_to_file(plan: Plan, path: str | Path, fmt: str | None = None) -> Path:
    """Write the drawing to ``path``; the format defaults to the file's suffix."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise GraphError(f"cannot tell the drawing format of {str(path)!r}: use a .svg, .png or .dot file")
    data = render(plan, fmt)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise GraphError(f"cannot write {path}: {exc}") from exc
    return path


# -- pieces ------------------------------------------------------------------------------
def _graph_label(plan: Plan) -> str:
    parts = [f"graph {plan.name}"]
    if plan.route_prefix:
        parts.append(f"route {plan.route_prefix}")
    if plan.timeout_s is not None:
        parts.append(f"timeout {plan.timeout_s:g}s")
    if plan.cluster is not None:
        parts.append(f"cluster {plan.cluster.cpus:g} cpus, {plan.cluster.gpus:g} gpus ({plan.cluster.source})")
    if plan.slo is not None:
        parts.append(f"SLO p99 {plan.slo.p99_s * 1000:g} ms at {plan.slo.rate_rps:g} req/s")
    if plan.prediction is not None:
        parts.append(f"predicted p50 {plan.prediction.p50_s * 1000:.1f} ms, p99 {plan.prediction.p99_s * 1000:.1f} ms")
    return " | ".join(parts)


def _node_line(plan: Plan, node: NodePlan, figures: bool = False) -> str:
    kind = node_kind(node)
    lines = [node.id]
    tooltip = [f"{kind} node {node.id} (stage {node.stage})"]
    if kind == "input":
        lines.append(f"input: {node.type}")
    elif kind == "deployment":
        dep = _deployment(plan, node.deployment)
        call = f"{node.deployment}.{node.method}"
        if call != node.id:
            lines.append(call)
        if dep is not None:
            res = dep.resources
            lines.append(f"replicas={dep.num_replicas} cpus={res.num_cpus:g} gpus={res.num_gpus:g}")
            for b in dep.batching:
                if b.method == node.method:
                    lines.append(
                        f"batch<={b.max_batch_size} wait={b.batch_wait_timeout_s:g}s x{b.max_concurrent_batches}"
                    )
            tooltip.append(f"{dep.import_path}, max_ongoing_requests={dep.max_ongoing_requests}")
            planned = sorted(c.field for c in dep.choices if c.source == "planned")
            if planned:
                lines.append("planned: " + ", ".join(planned))
            if dep.reason:
                tooltip.append(dep.reason)
        if node.predicted is not None:
            budget = f" of {node.latency_budget_s * 1000:.1f}" if node.latency_budget_s is not None else ""
            lines.append(f"predicted p99 {node.predicted.p99_s * 1000:.1f}{budget} ms")
    elif kind == "glue":
        lines.append(f"glue {(node.function or '').rpartition(':')[2]}")
        tooltip.append(node.function or "")
    elif kind == "switch":
        lines.append(f"switch on {node.selector}")
    elif kind == "attr":
        lines = [f".{node.key}" if node.access == "attr" else f"[{node.key!r}]"]
        tooltip.append(f"selects {lines[0]}")
    elif kind == "output":
        lines.append(f"output: {node.type}")
    if node.fused and node.fused_reason:
        tooltip.append(f"fused: {node.fused_reason}")
    guard = guard_label(plan, node.guard)
    if guard:
        lines.append(f"if {guard}")
        tooltip.append(f"runs if {guard}")
    if figures and kind == "deployment":
        lines.extend(FIGURE_LINES)
    attrs = dict(_STYLE[kind])
    attrs["id"] = node_svg_id(node.id)
    if node.guard is not None:
        attrs["style"] += ",dashed"
    attrs["label"] = "\n".join(lines)
    attrs["class"] = f"kind-{kind}" + (" fused" if node.fused else "") + (" guarded" if node.guard is not None else "")
    attrs["tooltip"] = "\n".join(tooltip)
    return f"{_q(node.id)} [{_attrs(attrs)}];"


def _in_edges(plan: Plan, node: NodePlan) -> list[tuple[str, str]]:
    """(producer, label) for each input of ``node``; label "" means the producer's type."""
    edges: dict[str, str] = {}
    if node.kind == "switch":
        if node.selector:
            edges[node.selector] = f"selector: {plan.node(node.selector).type}"
        for branch in node.branches:
            for source in _refs(branch.arg):
                edges.setdefault(source, f"case {branch.value!r}: {plan.node(source).type}")
        if node.default is not None:
            for source in _refs(node.default):
                edges.setdefault(source, f"default: {plan.node(source).type}")
    for source in node.inputs:
        edges.setdefault(source, "")
    return sorted(edges.items())


def _refs(arg: Any) -> list[str]:
    if isinstance(arg, NodeRef):
        return [arg.node]
    if isinstance(arg, StructValue):
        return [ref for _, item in arg.items for ref in _refs(item)]
    return []


def _arm(plan: Plan, term: GuardTerm) -> str:
    try:
        switch = plan.node(term.switch)
    except KeyError:
        return f"arm {term.arm}"
    if term.arm == -1:
        return "default"
    if 0 <= term.arm < len(switch.branches):
        return repr(switch.branches[term.arm].value)
    return f"arm {term.arm}"


def _deployment(plan: Plan, name: str | None) -> Any:
    if name is None:
        return None
    try:
        return plan.deployment(name)
    except KeyError:
        return None


def _q(text: str) -> str:
    """A DOT quoted string; newlines become centred line breaks."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\r", "")
    return '"' + escaped.replace("\n", "\\n") + '"'


def _attrs(attrs: dict[str, str]) -> str:
    return ", ".join(f"{key}={_q(value)}" for key, value in attrs.items())
