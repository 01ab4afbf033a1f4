"""The graph IR: plain data on a small :class:`~graphserve.compiler.digraph.DiGraph`, as torch.fx keeps its Graph.

Node kinds are a closed vocabulary (:data:`NodeKind`):

========  ================================================================
input     the request
attr      ``source.key`` or ``source[key]`` of another node's value
call      a deployment method, a function deployment, or inline glue
switch    evaluates a selector, then only the selected branch
output    collects the graph's result (one node, or a list/tuple/dict)
========  ================================================================

Edges run producer -> consumer and carry the consumer's argument ``slot`` (a position,
a keyword, ``"selector"`` or ``"branch:<value>"``). Deployments (constructors, options,
handles between them) live beside the dataflow in :class:`IRDeployment`; handle edges
form their own graph, ``GraphIR.handles``.

The IR keeps Python objects (``target``) for validation and in-process execution; the
planner turns it into the serializable :class:`~graphserve.plan.Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from graphserve.errors import Location
from graphserve.plan import SLOPlan

from .digraph import DiGraph

NodeKind = Literal["input", "attr", "call", "switch", "output"]


@dataclass(frozen=True)
class NodeArg:
    """An argument that is another node's value."""

    node: str


@dataclass(frozen=True)
class ConstArg:
    """An argument given as a plain value at build time."""

    value: Any


@dataclass(frozen=True)
class HandleArg:
    """A constructor argument that is another deployment: it arrives as a handle."""

    deployment: str


@dataclass(frozen=True)
class StructArg:
    """A list/tuple/dict constructor argument that contains handles."""

    form: Literal["list", "tuple", "dict"]
    items: tuple[tuple[Any, Arg], ...]  # (key or index, arg)


Arg = NodeArg | ConstArg | HandleArg | StructArg


@dataclass
class IRNode:
    """One node of the dataflow graph. Fields not used by a kind stay at their defaults."""

    id: str
    kind: NodeKind
    location: Location | None = None
    # call
    deployment: str | None = None
    method: str | None = None
    glue: Any = None  # the glue callable (call nodes that run inline)
    args: list[Arg] = field(default_factory=list)
    kwargs: dict[str, Arg] = field(default_factory=dict)
    # attr
    key: Any = None
    access: Literal["attr", "item"] = "attr"
    # switch: (arm value, node) pairs in declaration order; default node or None
    selector: str | None = None
    branches: list[tuple[Any, Arg]] = field(default_factory=list)
    default: Arg | None = None
    # output
    form: Literal["single", "list", "tuple", "dict"] = "single"
    keys: list[str] = field(default_factory=list)
    # input
    schema: Any = None

    def inputs(self) -> list[str]:
        """Ids of the nodes this node reads, in argument order."""
        refs: list[Arg] = [*self.args, *self.kwargs.values()]
        if self.selector is not None:
            refs.append(NodeArg(self.selector))
        refs += [arg for _, arg in self.branches]
        if self.default is not None:
            refs.append(self.default)
        return [ref.node for ref in refs if isinstance(ref, NodeArg)]


@dataclass
class IRDeployment:
    """A deployment of the graph: what to construct, with which options."""

    name: str
    target: Any  # the user's class or function
    is_function: bool
    options: dict[str, Any]
    location: Location | None = None
    init_args: list[Arg] = field(default_factory=list)
    init_kwargs: dict[str, Arg] = field(default_factory=dict)
    bound: bool = True  # False for function deployments (nothing to construct)


@dataclass
class GraphIR:
    """The whole graph: dataflow in ``dag``, deployments by name, handle edges in ``handles``."""

    name: str
    dag: DiGraph = field(default_factory=DiGraph)
    deployments: dict[str, IRDeployment] = field(default_factory=dict)
    handles: DiGraph = field(default_factory=DiGraph)
    output: str = "output"
    input: str | None = None
    timeout_s: float | None = None
    route_prefix: str | None = None
    location: Location | None = None
    raw_ingress: bool = False  # app without an InputNode: the ingress gets the request itself
    ingress: str | None = None  # on such an app, the id of the ingress call node
    slo: SLOPlan | None = None  # the app's latency objective (planned by compiler/slo.py)

    def node(self, node_id: str) -> IRNode:
        data: IRNode = self.dag.nodes[node_id]["ir"]
        return data

    def add(self, node: IRNode) -> IRNode:
        self.dag.add_node(node.id, ir=node)
        for slot, ref in _slots(node):
            self.dag.add_edge(ref, node.id, slot=slot)
        return node


def _slots(node: IRNode) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i, arg in enumerate(node.args):
        if isinstance(arg, NodeArg):
            out.append((str(i), arg.node))
    for k, arg in node.kwargs.items():
        if isinstance(arg, NodeArg):
            out.append((k, arg.node))
    if node.selector is not None:
        out.append(("selector", node.selector))
    for value, arg in node.branches:
        if isinstance(arg, NodeArg):
            out.append((f"branch:{value!r}", arg.node))
    if isinstance(node.default, NodeArg):
        out.append(("branch:default", node.default.node))
    return out
