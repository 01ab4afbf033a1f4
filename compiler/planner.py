"""Planning: a validated :class:`GraphIR` -> a :class:`Plan`.

Decides, in this order:

1. **fusion**: attr selections, glue functions and switches are cheap and pure; they
   run inline where their value is needed instead of costing a hop.
2. **stages**: waves of deployment calls that can run concurrently. Stage 0 is the
   input; a call's stage is one more than the latest stage it reads from; fused nodes
   run at the start of the stage after their inputs are ready. The last stage holds
   the output.
3. **branch guards**: for each node, the switch outcomes under which it runs (any of
   all of ``switch took arm i``); a node reachable only through untaken arms is skipped.
4. **batching and limits**: batched methods, and ``max_ongoing_requests`` raised where
   it would cap a batch below ``max_batch_size`` (with a warning).
5. **replicas and resources**: one entry per replica, checked against the cluster; on a
   cluster that names its nodes, spread over them (``placement.py``), each near its
   neighbours in the graph where spreading allows.
6. **actor fusion** (``fusion.py``): neighbouring deployments the Ray backend may run in one
   actor process per replica, and why; the SLO planner redoes it after changing replicas.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from graphserve.dsl import batch_config, batch_explicit
from graphserve.errors import Diagnostic, GraphValidationError, PlanError
from graphserve.plan import (
    DEFAULT_MAX_ONGOING_REQUESTS,
    ArgPlan,
    BatchingPlan,
    BranchPlan,
    ClusterNodePlan,
    ClusterPlan,
    ConstValue,
    DeploymentPlan,
    DiagnosticPlan,
    GuardTerm,
    HandleRef,
    NodePlan,
    NodeRef,
    Plan,
    ReplicaPlan,
    ResourcesPlan,
    StructValue,
    import_path_of,
)
from graphserve.resources import Capacity, shortfalls

from . import edgetypes, fusion, placement
from .codes import Code
from .digraph import DiGraph, topological_order
from .http_request import http_request, ingress_route_prefix
from .ir import Arg, ConstArg, GraphIR, HandleArg, IRDeployment, IRNode, NodeArg, StructArg

_FUSED_REASONS = {
    "attr": "field selection: inline, no hop",
    "switch": "control flow: runs inline and starts only the selected branch",
    "glue": "glue function: cheap and pure, runs inline in the consuming stage",
    "output": "collects the result inline",
}

Cluster = Mapping[str, float] | ClusterPlan | None


def detect_cluster() -> ClusterPlan:
    """This machine as a one-node cluster: its CPUs and NVIDIA GPUs (without importing torch)."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    gpus = 0.0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        gpus = float(len(os.listdir("/proc/driver/nvidia/gpus")))
    except OSError:
        gpus = 0.0
    if visible is not None and gpus:
        gpus = float(min(gpus, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])))
    return ClusterPlan(cpus=cpus, gpus=gpus, source="detected")


def parse_cluster(cluster: Cluster | str) -> ClusterPlan | None:
    """``{"cpus": 8, "gpus": 2}``, ``"cpus=8,gpus=2"``, ``"nodes=FILE"``, ``"detect"``, or None (no check).

    A nodes file is JSON: ``{"nodes": [{"name": "a", "cpus": 16, "gpus": 2, "address": "10.0.0.5",
    "labels": {"zone": "x"}}, ...]}`` (or the list alone); the cluster is their sum."""
    if cluster is None or isinstance(cluster, ClusterPlan):  # None, or already read (a live Ray cluster)
        return cluster
    if isinstance(cluster, str):
        if cluster == "detect":
            return detect_cluster()
        if cluster.strip().startswith("nodes="):
            return _read_nodes(cluster.strip()[len("nodes=") :])
        parsed: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in cluster.split(","))):
            key, _, value = part.partition("=")
            parsed[key.strip()] = float(value)
        cluster = parsed
    unknown = set(cluster) - {"cpus", "gpus"}
    if unknown:
        raise ValueError(f"unknown cluster keys {sorted(unknown)}: expected cpus and gpus, or nodes=FILE")
    return ClusterPlan(cpus=float(cluster.get("cpus", 0)), gpus=float(cluster.get("gpus", 0)), source="given")


def _read_nodes(path: str) -> ClusterPlan:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read nodes file {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"nodes file {path!r} is not JSON: {exc}") from None
    items = data.get("nodes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ValueError(f"nodes file {path!r} must hold a non-empty list of nodes (name, cpus, gpus)")
    try:
        nodes = [ClusterNodePlan.model_validate(item) for item in items]
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"nodes file {path!r}: {where}: {first['msg']}") from None
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"nodes file {path!r} names a node twice: {sorted(names)}")
    return ClusterPlan(cpus=sum(n.cpus for n in nodes), gpus=sum(n.gpus for n in nodes), source="given", nodes=nodes)


class _Planner:
    def __init__(
        self,
        ir: GraphIR,
        types: dict[str, Any],
        warnings: list[Diagnostic],
        cluster: ClusterPlan | None,
        fuse: bool = True,
    ):
        self.ir = ir
        self.fuse = fuse
        self.types = types
        self.warnings = list(warnings)
        self.errors: list[Diagnostic] = []
        self.cluster = cluster
        self.objects: dict[str, Any] = {}
        self.order = _in_order(ir.dag)

    # -- arguments -------------------------------------------------------------------
    def arg(self, arg: Arg) -> ArgPlan:
        if isinstance(arg, NodeArg):
            return NodeRef(node=arg.node)
        if isinstance(arg, HandleArg):
            return HandleRef(deployment=arg.deployment)
        if isinstance(arg, StructArg):
            return StructValue(form=arg.form, items=[(k, self.arg(v)) for k, v in arg.items])
        assert isinstance(arg, ConstArg)
        return ConstValue(value=arg.value)

    def path(self, obj: Any) -> str:
        path = import_path_of(obj)
        self.objects[path] = obj
        return path

    # -- nodes -----------------------------------------------------------------------
    def fused_kind(self, node: IRNode) -> str | None:
        if node.kind == "call":
            return "glue" if node.glue is not None else None
        return node.kind if node.kind in _FUSED_REASONS else None

    def stages(self, guards: dict[str, list[list[GuardTerm]] | None]) -> dict[str, int]:
        """Stage per node; a guarded node waits for the selectors of its switches too."""
        waits = self.ir.dag.copy()
        for node_id, conjs in guards.items():
            for term in (t for conj in conjs or [] for t in conj):
                selector = self.ir.node(term.switch).selector
                if selector is not None:  # always, for a switch
                    waits.add_edge(selector, node_id)
        ready: dict[str, int] = {}
        stage: dict[str, int] = {}
        for node_id in _in_order(waits):
            node = self.ir.node(node_id)
            preds = [ready[p] for p in waits.predecessors(node_id)]
            base = max(preds, default=0)
            if node.kind == "input":
                stage[node_id] = ready[node_id] = 0
            elif self.fused_kind(node) is None:  # a deployment call: a hop
                stage[node_id] = ready[node_id] = base + 1
            else:
                stage[node_id], ready[node_id] = base + 1, base
        if self.ir.output in stage:
            stage[self.ir.output] = max(stage.values())
        return stage

    def guards(self) -> dict[str, list[list[GuardTerm]] | None]:
        """Any-of all-of switch outcomes under which each node runs (None: always)."""
        terms: dict[str, list[frozenset[tuple[str, int]]]] = {self.ir.output: [frozenset()]}
        for node_id in reversed(self.order):
            node = self.ir.node(node_id)
            mine = terms.get(node_id, [])
            feeds: list[tuple[Arg, frozenset[tuple[str, int]] | None]] = [(a, None) for a in node.args]
            feeds += [(a, None) for a in node.kwargs.values()]
            if node.selector is not None:
                feeds.append((NodeArg(node.selector), None))
            feeds += [(a, frozenset({(node.id, i)})) for i, (_, a) in enumerate(node.branches)]
            if node.default is not None:
                feeds.append((node.default, frozenset({(node.id, -1)})))
            for arg, extra in feeds:
                if not isinstance(arg, NodeArg):
                    continue
                bucket = terms.setdefault(arg.node, [])
                for conj in mine:
                    combined = conj | extra if extra else conj
                    if _consistent(combined) and combined not in bucket:
                        bucket.append(combined)
        result: dict[str, list[list[GuardTerm]] | None] = {}
        for node_id in self.order:
            conjs = _absorb(terms.get(node_id, []))
            if any(not c for c in conjs) or not conjs:
                result[node_id] = None
            else:
                result[node_id] = [[GuardTerm(switch=s, arm=a) for s, a in sorted(c)] for c in conjs]
        return result

    def node_plan(self, node: IRNode, stage: int, guard: list[list[GuardTerm]] | None) -> NodePlan:
        fused = self.fused_kind(node)
        plan = NodePlan(
            id=node.id,
            kind=node.kind,
            location=str(node.location) if node.location else None,
            deployment=node.deployment,
            method=node.method,
            function=self.path(node.glue) if node.glue is not None else None,
            args=[self.arg(a) for a in node.args],
            kwargs={k: self.arg(v) for k, v in node.kwargs.items()},
            key=node.key,
            access=node.access,
            selector=node.selector,
            branches=[BranchPlan(value=v, arg=self.arg(a)) for v, a in node.branches],
            default=self.arg(node.default) if node.default is not None else None,
            form=node.form,
            keys=node.keys,
            type=edgetypes.describe(self.types.get(node.id, edgetypes.ANY)),
            inputs=sorted(set(node.inputs())),
            consumers=sorted(self.ir.dag.successors(node.id)),
            stage=stage,
            guard=guard,
            fused=fused is not None,
            fused_reason=_FUSED_REASONS.get(fused) if fused else None,
        )
        return plan

    # -- deployments -----------------------------------------------------------------
    def deployment_plan(self, dep: IRDeployment) -> DeploymentPlan:
        options = dep.options
        actor = options.get("ray_actor_options") or {}
        num_cpus = options.get("num_cpus", actor.get("num_cpus", 0.0)) or 0.0
        num_gpus = options.get("num_gpus", actor.get("num_gpus", 0.0)) or 0.0
        batching = self.batching(dep)
        explicit = options.get("max_ongoing_requests", options.get("max_concurrent_queries"))
        max_ongoing = int(explicit) if explicit is not None else DEFAULT_MAX_ONGOING_REQUESTS
        # a batch sized by batch_size_fn counts tokens (or the like), not calls: no count of calls to check
        needed = max((b.max_batch_size * b.max_concurrent_batches for b in batching if not b.sized_by_fn), default=0)
        if needed > max_ongoing:
            self.warnings.append(
                Diagnostic(
                    Code.BATCH_CAPPED,
                    f"max_ongoing_requests={max_ongoing} would cap batches of {dep.name} below max_batch_size; "
                    f"raised to {needed} (max_batch_size x max_concurrent_batches)",
                    dep.name,
                    dep.location,
                    "set max_ongoing_requests >= max_batch_size x max_concurrent_batches",
                    "warning",
                )
            )
            max_ongoing = needed
        queued = options.get("max_queued_requests", -1)
        return DeploymentPlan(
            name=dep.name,
            import_path=self.path(dep.target),
            kind="function" if dep.is_function else "class",
            init_args=[self.arg(a) for a in dep.init_args],
            init_kwargs={k: self.arg(v) for k, v in dep.init_kwargs.items()},
            num_replicas=_replica_count(options),
            max_ongoing_requests=max_ongoing,
            max_queued_requests=int(queued),
            max_retries=int(options.get("max_retries", 0)),
            resources=ResourcesPlan(num_cpus=float(num_cpus), num_gpus=float(num_gpus)),
            batching=batching,
            handles=sorted(self.ir.handles.successors(dep.name)),
            route_prefix=options.get("route_prefix"),
            location=str(dep.location) if dep.location else None,
            user_config=options.get("user_config"),
            user_set=self.user_set(dep),
            fuse=bool(options.get("fuse", True)),
        )

    def user_set(self, dep: IRDeployment) -> list[str]:
        """The tunables the user wrote: the SLO planner keeps them."""
        options = dep.options
        actor = options.get("ray_actor_options") or {}
        written = set()
        if isinstance(options.get("num_replicas"), int) and not isinstance(options.get("num_replicas"), bool):
            written.add("num_replicas")
        for key in ("max_ongoing_requests", "max_queued_requests", "fuse"):
            if key in options:
                written.add(key)
        if "max_concurrent_queries" in options:
            written.add("max_ongoing_requests")
        for key in ("num_cpus", "num_gpus"):
            if key in options or key in actor:
                written.add(key)
        members = [(dep.name, dep.target)] if dep.is_function else inspect.getmembers(dep.target)
        for name, member in members:
            if batch_config(member) is not None:
                method = "__call__" if dep.is_function else name
                written.update(f"{method}.{key}" for key in batch_explicit(member))
        return sorted(written)

    def batching(self, dep: IRDeployment) -> list[BatchingPlan]:
        members = [(dep.name, dep.target)] if dep.is_function else inspect.getmembers(dep.target)
        out = []
        for name, member in members:
            config = batch_config(member)
            if config is not None:
                adaptive = bool(config.pop("adaptive", False))
                out.append(BatchingPlan(method="__call__" if dep.is_function else name, adaptive=adaptive, **config))
        return out

    def replicas(self, deployments: list[DeploymentPlan]) -> list[ReplicaPlan]:
        """One entry per replica: on node-0, or spread over the cluster's named nodes (placement.py)."""
        if self.cluster is not None:
            errors_before = len(self.errors)
            self.check_feasible(deployments)
            if self.cluster.nodes:
                placed, unplaced = placement.spread(deployments, self.cluster.nodes, self.near())
                if len(self.errors) == errors_before:  # the totals fit: report replicas no single node holds
                    self.unplaced(unplaced)
                return placed
        return [
            ReplicaPlan(
                deployment=d.name, index=i, node="node-0", num_cpus=d.resources.num_cpus, num_gpus=d.resources.num_gpus
            )
            for d in deployments
            for i in range(d.num_replicas)
        ]

    def near(self) -> dict[str, frozenset[str]]:
        """Each deployment's neighbours in the graph (calls feeding its calls or fed by them, handles)."""
        out: dict[str, set[str]] = {name: set() for name in self.ir.deployments}
        calls = {n: self.ir.node(n).deployment for n in self.order}
        pairs = [(calls.get(a), calls.get(b)) for a, b, _ in self.ir.dag.edges()]
        pairs += [(a, b) for a, b, _ in self.ir.handles.edges()]
        for a, b in pairs:
            if a and b and a != b and a in out and b in out:
                out[a].add(b)
                out[b].add(a)
        return {name: frozenset(near) for name, near in out.items()}

    def unplaced(self, unplaced: list[placement.Unplaced]) -> None:
        assert self.cluster is not None
        nodes = ", ".join(f"{n.name} ({n.cpus:g} cpus, {n.gpus:g} gpus)" for n in placement.usable(self.cluster.nodes))
        for name in dict.fromkeys(u.deployment for u in unplaced):
            mine = [u for u in unplaced if u.deployment == name]
            first = mine[0]
            self.errors.append(
                Diagnostic(
                    Code.INFEASIBLE,
                    f"{len(mine)} replica(s) of {name} ({first.cpus:g} cpus, {first.gpus:g} gpus each) fit on no node "
                    f"of the cluster once the others are placed; nodes: {nodes or 'none with cpus or gpus'}",
                    name,
                    self.ir.deployments[name].location,
                    "lower num_replicas or the resources per replica, or add a node",
                )
            )

    def check_feasible(self, deployments: list[DeploymentPlan]) -> None:
        """GS201 (``graphserve/resources.py``, the rule the Ray backend checks too) for the planned cluster."""
        cluster = self.cluster
        if cluster is None:
            return
        capacity = Capacity(
            cpus=cluster.cpus,
            gpus=cluster.gpus,
            name=f"the cluster ({cluster.source})",
            remedy="plan for a bigger cluster (--cluster {resource}=N)",
        )
        locations = {d.name: self.ir.deployments[d.name].location for d in deployments}
        self.errors += shortfalls(deployments, capacity, locations)

    # -- the plan ----------------------------------------------------------------------
    def run(self) -> Plan:
        guards = self.guards()
        stages = self.stages(guards)
        nodes = [self.node_plan(self.ir.node(n), stages[n], guards[n]) for n in self.order]
        deployments = [self.deployment_plan(self.ir.deployments[name]) for name in sorted(self.ir.deployments)]
        replicas = self.replicas(deployments)
        wants_http_request, problems = http_request(self.ir)
        self.errors += problems
        if self.errors:
            raise GraphValidationError(self.errors, graph=self.ir.name)
        waves: dict[int, list[str]] = {}
        for n in self.order:
            waves.setdefault(stages[n], []).append(n)
        input_node = self.ir.node(self.ir.input or "input")
        schema = input_node.schema
        plan = Plan(
            name=self.ir.name,
            route_prefix=ingress_route_prefix(self.ir),
            timeout_s=self.ir.timeout_s,
            input=input_node.id,
            output=self.ir.output,
            raw_ingress=self.ir.raw_ingress,
            http_request=wants_http_request,
            input_schema=self.path(schema) if schema is not None else None,
            input_json_schema=schema.model_json_schema() if schema is not None else None,
            nodes=nodes,
            deployments=deployments,
            stages=[waves[k] for k in sorted(waves)],
            replicas=replicas,
            cluster=self.cluster,
            slo=self.ir.slo,
            warnings=[
                DiagnosticPlan(
                    code=w.code,
                    message=w.message,
                    node=w.node,
                    location=str(w.location) if w.location else None,
                    hint=w.hint,
                    severity=w.severity,
                )
                for w in self.warnings
            ],
        )
        for path, obj in self.objects.items():
            plan.register(path, obj)
        fusion.fuse(plan, enabled=self.fuse)
        return plan


def _replica_count(options: Mapping[str, Any]) -> int:
    """``num_replicas``; without it (or ``"auto"``), autoscaling's ``min_replicas``, at least 1."""
    count = options.get("num_replicas")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    autoscaling = options.get("autoscaling_config") or {}
    floor = autoscaling.get("min_replicas", 1) if isinstance(autoscaling, Mapping) else 1
    return max(1, int(floor or 1))


def _consistent(conj: frozenset[tuple[str, int]]) -> bool:
    switches = [s for s, _ in conj]
    return len(switches) == len(set(switches))


def _absorb(conjs: list[frozenset[tuple[str, int]]]) -> list[frozenset[tuple[str, int]]]:
    kept = [c for c in conjs if not any(other < c for other in conjs)]
    return sorted(set(kept), key=lambda c: sorted(c))


def plan(
    ir: GraphIR, types: dict[str, Any], warnings: list[Diagnostic], cluster: Cluster | str = None, fuse: bool = True
) -> Plan:
    """Plan a validated IR; infeasible placements raise GraphValidationError (GS201).

    ``fuse=False``: no actor fusion (``graphserve build --no-fuse``)."""
    return _Planner(ir, types, warnings, parse_cluster(cluster), fuse).run()


def _in_order(dag: DiGraph) -> list[str]:
    order = topological_order(dag)
    if order is None:  # pragma: no cover - validation reports cycles before planning
        raise PlanError("the dataflow graph has a cycle")
    return order
