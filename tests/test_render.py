"""Drawing plans: the DOT text (no Graphviz needed) and the SVG Graphviz draws from it,
checked by content: node ids and kinds, stage clusters, edge labels, dashed guarded edges."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import graphserve as gs
from graphserve.compiler import Plan, compile_app
from graphserve.compiler.render import FIGURE_LINES, FORMATS, node_kind, render, render_to_file, to_dot
from tests.graphs import branching, plan_graphs

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (make setup)")


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_app(branching.app, cluster={"cpus": 8})


def _svg(data: bytes) -> dict[str, dict[str, dict[str, Any]]]:
    """Nodes, edges and clusters of a Graphviz SVG, keyed by their <title>."""
    root = ET.fromstring(data)
    found: dict[str, dict[str, dict[str, Any]]] = {"node": {}, "edge": {}, "cluster": {}}
    for group in root.iter(f"{SVG}g"):
        classes = (group.get("class") or "").split()
        if not classes or classes[0] not in found:
            continue
        title = group.findtext(f"{SVG}title") or ""
        texts = [t.text or "" for t in group.iter(f"{SVG}text")]
        dashed = any(p.get("stroke-dasharray") for p in group.iter(f"{SVG}path"))
        dashed = dashed or any(p.get("stroke-dasharray") for p in group.iter(f"{SVG}polygon"))
        found[classes[0]][title] = {"classes": classes[1:], "texts": texts, "dashed": dashed}
    return found


# -- DOT (no Graphviz needed) ----------------------------------------------------------------
def test_dot_needs_no_graphviz(plan: Plan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    assert shutil.which("dot") is None
    text = render(plan, "dot").decode()
    assert text == to_dot(plan)
    out = render_to_file(plan, tmp_path / "graph.dot")
    assert out.read_text() == text


def test_dot_text_has_every_node_stage_and_edge(plan: Plan) -> None:
    text = to_dot(plan)
    assert text.startswith('digraph "branching" {')
    for index in range(len(plan.stages)):
        assert f"subgraph cluster_stage_{index} {{" in text
    for node in plan.nodes:
        assert f'"{node.id}" [' in text
        for source in node.inputs:
            assert f'"{source}" -> "{node.id}" [' in text
    assert (
        '"input.text" -> "Heavy.run" [label="str", style="dashed", class="guarded", id="edge:input.text->Heavy.run"];'
        in text
    )
    assert '"input.text" -> "Scorer.__call__" [label="str", id="edge:input.text->Scorer.__call__"];' in text
    assert '"Scorer.__call__" -> "is_long" [label="float", id="edge:Scorer.__call__->is_long"];' in text
    assert 'id="node:Scorer.__call__"' in text and "calls" not in text


def test_figures_leave_room_in_deployment_nodes_only(plan: Plan) -> None:
    text = to_dot(plan, figures=True)
    deployments = [n for n in plan.nodes if n.kind == "call" and n.deployment]
    assert text.count("\\n".join(FIGURE_LINES)) == len(deployments) > 0
    assert to_dot(plan) == to_dot(plan, figures=False)


def test_dot_is_deterministic() -> None:
    first = to_dot(compile_app(branching.app, cluster={"cpus": 8}))
    assert first == to_dot(compile_app(branching.app, cluster={"cpus": 8}))
    assert to_dot(gs.build(plan_graphs.nested_app())) == to_dot(gs.build(plan_graphs.nested_app()))


def test_dot_from_a_plan_read_back_from_json_is_the_same(plan: Plan) -> None:
    assert to_dot(Plan.from_json(plan.to_json())) == to_dot(plan)


def test_svg_without_dot_says_how_to_install_it(plan: Plan, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(gs.GraphError, match="apt-get install graphviz") as caught:
        render(plan, "svg")
    assert "make setup" in str(caught.value)
    with pytest.raises(gs.GraphError, match="apt-get install graphviz"):
        render_to_file(plan, tmp_path / "graph.png")
    assert not (tmp_path / "graph.png").exists()


def test_unknown_formats_are_refused(plan: Plan, tmp_path: Path) -> None:
    assert FORMATS == ("dot", "svg", "png")
    with pytest.raises(gs.GraphError, match="formats are dot, svg, png"):
        render(plan, "pdf")
    with pytest.raises(gs.GraphError, match=r"use a \.svg, \.png or \.dot file"):
        render_to_file(plan, tmp_path / "graph.txt")


def test_quotes_and_backslashes_in_names_are_escaped() -> None:
    with gs.InputNode() as inp:
        app = gs.graph(plan_graphs.Embed.bind().__call__.bind(inp['say "hi" \\ there']), name='odd "name"')
    odd = gs.build(app)
    text = to_dot(odd)
    assert text.startswith('digraph "odd \\"name\\"" {')
    for node in odd.nodes:
        quoted = '"' + node.id.replace("\\", "\\\\").replace('"', '\\"') + '"'
        assert quoted + " [" in text
    if shutil.which("dot"):  # Graphviz reads it back: the names keep DOT's escapes, the labels show the text
        nodes = _svg(render(odd, "svg"))["node"]
        assert set(nodes) == {n.id.replace("\\", "\\\\") for n in odd.nodes}
        shown = [t for n in nodes.values() for t in n["texts"] if "say" in t]
        assert shown == ["[" + repr('say "hi" \\ there') + "]"]


# -- SVG (Graphviz) ----------------------------------------------------------------------
@needs_dot
def test_svg_content_nodes_kinds_stages_edges_and_dashed_guards(plan: Plan) -> None:
    svg = _svg(render(plan, "svg"))
    nodes, edges, clusters = svg["node"], svg["edge"], svg["cluster"]
    assert set(nodes) == {n.id for n in plan.nodes}
    for node in plan.nodes:
        assert f"kind-{node_kind(node)}" in nodes[node.id]["classes"], node.id
    assert set(clusters) == {f"cluster_stage_{i}" for i in range(len(plan.stages))}
    kinds = {node_kind(n) for n in plan.nodes}
    assert kinds == {"input", "attr", "deployment", "glue", "switch", "output"}

    # deployment nodes carry replicas, resources and batching
    assert "replicas=2 cpus=1 gpus=0" in nodes["Scorer.__call__"]["texts"]
    heavy = nodes["Heavy.run"]["texts"]
    assert "replicas=1 cpus=2 gpus=0" in heavy and "batch<=8 wait=0.005s x1" in heavy
    assert "if switch=True" in heavy

    # every edge, labelled with its producer's type (switch arms name their case)
    expected = {(s, n.id) for n in plan.nodes for s in n.inputs}
    assert {tuple(title.split("->")) for title in edges} == expected
    assert edges["Scorer.__call__->is_long"]["texts"] == ["float"]
    assert edges["input->input.text"]["texts"] == ["Request"]
    assert edges["is_long->switch"]["texts"] == ["selector: bool"]
    assert edges["Heavy.run->switch"]["texts"] == ["case True: str"]
    assert edges["Fast.__call__->switch#2"]["texts"] == ["case 'fast': str"]

    # guarded (conditional) edges are dashed, the others solid
    for title, edge in edges.items():
        source, target = title.split("->")
        guarded = plan.node(source).guard is not None or plan.node(target).guard is not None
        assert edge["dashed"] is guarded, title
        assert ("guarded" in edge["classes"]) is guarded, title
    assert edges["input.text->light"]["dashed"] and not edges["input.text->Scorer.__call__"]["dashed"]


@needs_dot
def test_svg_of_nested_guards_and_gpus() -> None:
    nested = gs.build(plan_graphs.nested_app())
    nodes = _svg(render(nested, "svg"))["node"]
    assert "if switch=True and switch#2=default or switch=False" in nodes["Branch_2.__call__"]["texts"]
    gpu = gs.build(plan_graphs.gpu_app())
    texts = _svg(render(gpu, "svg"))["node"]["GpuModel.__call__"]["texts"]
    assert "replicas=2 cpus=0 gpus=1" in texts


@needs_dot
def test_svg_is_deterministic_and_png_is_a_png(plan: Plan, tmp_path: Path) -> None:
    assert render(plan, "svg") == render(compile_app(branching.app, cluster={"cpus": 8}), "svg")
    png = render_to_file(plan, tmp_path / "graph.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    svg = render_to_file(plan, tmp_path / "graph.out", fmt="svg").read_bytes()
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg


# -- actor fusion --------------------------------------------------------------------------
def test_a_fused_group_is_drawn_as_one_box_around_its_calls() -> None:
    from tests.graphs import fusion_graphs

    fused = compile_app(fusion_graphs.app)
    text = to_dot(fused)
    box = text[text.index("subgraph cluster_fused_0 {") :]
    box = box[: box.index("  }")]
    assert 'label="one Ray actor: a+b+c+gpu1 (fused, 3 hop(s) saved)"' in box
    assert all(f'"{n}.__call__" [' in box for n in ("a", "b", "c", "gpu1"))
    assert '"gpu2.__call__" [' not in box and "cluster_fused_1" not in text  # a second GPU deployment stays out
    if shutil.which("dot") is not None:
        clusters = _svg(render(fused, "svg"))["cluster"]
        assert "one Ray actor: a+b+c+gpu1 (fused, 3 hop(s) saved)" in clusters["cluster_fused_0"]["texts"]
