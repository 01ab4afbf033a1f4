"""Actor fusion: neighbouring deployments in one Ray actor process per replica.

The planner already fuses what is cheap and pure (field selections, glue, switches run
inline: ``NodePlan.fused``). This pass fuses deployments: on the Ray backend every call
between two actors is a hop (a Ray actor call, about a millisecond of CPU across driver
and actor), and a chain of three no-op deployments pays three. Two deployments are
*neighbours* when a call of one feeds a call of the other directly (a graph edge) or one
holds a handle to the other. Neighbours are grouped, greedily in graph order, into one
actor per replica when every rule below holds for the merged group; the Ray backend then
runs a group's calls for one request as one actor call, and inside the actor the calls
between members (and handle calls between them) are in-process function calls with the
local backend's semantics (each member keeps its own ``max_ongoing_requests``, queue,
batching, and errors name the member's node).

The rules (the first that fails is the reason two neighbours are kept apart):

1. neither deployment opted out (``gs.deployment(fuse=False)``) and fusion is on
   (``graphserve build --no-fuse`` turns it off for the whole plan);
2. the same number of replicas: a group scales as one, so deployments given different
   ``num_replicas`` (scaled separately) stay apart;
3. the same ``max_retries``: a call into the group is retried as a whole;
4. at most one member asks for a GPU: a GPU deployment never shares a process with another;
5. at most one member asks for a whole CPU (``num_cpus >= 1``): members share one Python
   interpreter, so two CPU-heavy members would lose the parallelism their CPUs pay for
   (light members, the default ``num_cpus=0``, cost nothing to share);
6. every replica of the two is planned on the same cluster node (replica *i* of each): a
   fused actor never spans a planned node boundary;
7. no two members run side by side for a request (calls neither of which feeds the other,
   such as the branches of a fan-out): the Ray backend sends such calls into a group one
   actor call each, so a group of them would save no hop and only put in one process what
   separate actors run in parallel; nor does a member that also waits for a deployment
   outside the group (a join): its call is an actor call of its own either way.

The result is :class:`~graphserve.plan.FusionPlan` on the plan: each group with the hops it
saves and its reason in words, and each pair of neighbours kept apart with the rule that
did it. ``graphserve build`` prints both; ``graphserve render`` draws a box per group.
The local backend ignores fusion.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphserve.plan import ArgPlan, FusedGroupPlan, FusionPlan, KeptApartPlan, NodeRef, Plan

OFF_REASON = "fusion is off for this plan (--no-fuse)"


def neighbours(plan: Plan) -> list[tuple[str, str, int]]:
    """(producer or caller, consumer or callee, edges) for each pair of distinct deployments
    joined by graph edges between their calls or by a handle, in graph order."""
    calls = {n.id: n.deployment for n in plan.nodes if n.kind == "call" and n.deployment and not n.function}
    edges: dict[tuple[str, str], int] = {}
    for node in plan.nodes:
        consumer = calls.get(node.id)
        if consumer is None:
            continue
        for ref in _node_refs([*node.args, *node.kwargs.values()]):
            producer = calls.get(ref)
            if producer is not None and producer != consumer:
                edges[(producer, consumer)] = edges.get((producer, consumer), 0) + 1
    for dep in plan.deployments:
        for target in dep.handles:
            if target != dep.name:
                edges[(dep.name, target)] = edges.get((dep.name, target), 0) + 1
    rank = _graph_order(plan)
    return sorted(((a, b, n) for (a, b), n in edges.items()), key=lambda e: (rank[e[0]], rank[e[1]]))


def fuse(plan: Plan, enabled: bool = True) -> FusionPlan:
    """Decide the fused groups of ``plan`` (see the module docstring); sets ``plan.fusion``."""
    pairs = neighbours(plan)
    if not enabled:
        plan.fusion = FusionPlan(
            enabled=False, kept_apart=[KeptApartPlan(deployments=[a, b], reason=OFF_REASON) for a, b, _ in pairs]
        )
        return plan.fusion
    group_of: dict[str, list[str]] = {d.name: [d.name] for d in plan.deployments}
    kept: list[KeptApartPlan] = []
    for a, b, _ in pairs:
        if group_of[a] is group_of[b]:
            continue
        reason = _refusal(plan, group_of[a], group_of[b], a, b)
        if reason is not None:
            kept.append(KeptApartPlan(deployments=[a, b], reason=reason))
            continue
        merged = group_of[a] + group_of[b]
        for name in merged:
            group_of[name] = merged
    rank = _graph_order(plan)
    groups: list[FusedGroupPlan] = []
    seen: set[int] = set()
    for members in group_of.values():
        if len(members) < 2 or id(members) in seen:
            continue
        seen.add(id(members))
        ordered = sorted(members, key=lambda m: rank[m])
        inside = set(ordered)
        hops = sum(n for a, b, n in pairs if a in inside and b in inside)
        reason = _reason(plan, ordered, hops)
        groups.append(FusedGroupPlan(name="+".join(ordered), deployments=ordered, hops_saved=hops, reason=reason))
    groups.sort(key=lambda g: rank[g.deployments[0]])
    plan.fusion = FusionPlan(groups=groups, kept_apart=[k for k in kept if not _same_group(groups, k.deployments)])
    return plan.fusion


def _same_group(groups: list[FusedGroupPlan], pair: list[str]) -> bool:
    return any(set(pair) <= set(g.deployments) for g in groups)


def _refusal(plan: Plan, left: list[str], right: list[str], a: str, b: str) -> str | None:
    """Why the groups of ``a`` and ``b`` may not merge (None: they may)."""
    deps = {d.name: d for d in plan.deployments}
    da, db = deps[a], deps[b]
    for dep in (da, db):
        if not dep.fuse:
            return f"{dep.name} opted out (fuse=False)"
    merged = [deps[name] for name in left + right]
    if da.num_replicas != db.num_replicas:
        return (
            f"different num_replicas ({a}: {da.num_replicas}, {b}: {db.num_replicas}): each scales separately; "
            "a fused group has one replica count"
        )
    if da.max_retries != db.max_retries:
        return f"different max_retries ({a}: {da.max_retries}, {b}: {db.max_retries}): a fused call is retried whole"
    gpus = [d.name for d in merged if d.resources.num_gpus > 0]
    if len(gpus) > 1:
        return f"{' and '.join(gpus)} each need a GPU: a GPU deployment never shares its process with another"
    heavy = [d.name for d in merged if d.resources.num_cpus >= 1]
    if len(heavy) > 1:
        return (
            f"{' and '.join(heavy)} each ask for a whole CPU: in one process (one interpreter) they would lose "
            "the parallelism their CPUs pay for"
        )
    boundary = _node_boundary(plan, left, right)
    if boundary is not None:
        return boundary
    return _side_by_side(plan, left, right) or _waits_outside(plan, left + right)


def _side_by_side(plan: Plan, left: list[str], right: list[str]) -> str | None:
    """Rule 7: a member of ``left`` and one of ``right`` with calls neither of which feeds the other."""
    above = _upstream_calls(plan)
    calls: dict[str, list[str]] = {}
    for node in plan.nodes:
        if node.kind == "call" and node.deployment and not node.function:
            calls.setdefault(node.deployment, []).append(node.id)
    for x in left:
        for y in right:
            for cx in calls.get(x, []):
                for cy in calls.get(y, []):
                    if cx not in above[cy] and cy not in above[cx]:
                        return (
                            f"{x} and {y} run side by side for a request (neither feeds the other): their calls would "
                            "still go into one actor one by one, saving no hop, and share one process instead of two"
                        )
    return None


def _waits_outside(plan: Plan, members: list[str]) -> str | None:
    """Rule 7's join: a member whose call takes the value of another deployment's call outside ``members``."""
    deployment_of = {n.id: n.deployment for n in plan.nodes if n.kind == "call" and n.deployment and not n.function}
    inside = set(members)
    feeding: dict[str, set[str]] = {}  # node -> the deployment calls whose values reach it directly
    for node in plan.nodes:
        direct = set(node.inputs) | set(_node_refs([*node.args, *node.kwargs.values()]))
        direct |= {term.switch for terms in node.guard or [] for term in terms}
        found: set[str] = set()
        for ref in direct:
            found |= {ref} if ref in deployment_of else feeding.get(ref, set())
        feeding[node.id] = found
    for node in plan.nodes:
        if deployment_of.get(node.id) not in inside:
            continue
        fed_by = {deployment_of[u] for u in feeding[node.id]}
        outside = sorted(fed_by - inside)
        if outside and fed_by & inside:
            return (
                f"{node.deployment} also waits for {', '.join(outside)} outside the group: its call would be an "
                "actor call of its own either way"
            )
    return None


def _upstream_calls(plan: Plan) -> dict[str, set[str]]:
    """For each node, every node it depends on, directly or not (the plan's nodes are in graph order)."""
    above: dict[str, set[str]] = {}
    for node in plan.nodes:
        direct = set(node.inputs) | set(_node_refs([*node.args, *node.kwargs.values()]))
        direct |= {term.switch for terms in node.guard or [] for term in terms}  # a branch waits for its switch
        found = set(direct)
        for ref in direct:
            found |= above.get(ref, set())
        above[node.id] = found
    return above


def _node_boundary(plan: Plan, left: list[str], right: list[str]) -> str | None:
    where = {(r.deployment, r.index): r.node for r in plan.replicas}
    count = plan.deployment(left[0]).num_replicas
    for index in range(count):
        nodes = {name: where.get((name, index)) for name in left + right}
        if len(set(nodes.values())) > 1:
            planned = ", ".join(f"{name} on {node}" for name, node in nodes.items())
            return f"replica {index} is planned on different nodes ({planned}): a fused actor never spans nodes"
    return None


def _reason(plan: Plan, members: list[str], hops: int) -> str:
    deps = [plan.deployment(m) for m in members]
    gpu = next((d.name for d in deps if d.resources.num_gpus > 0), None)
    kind = f"with {gpu} the only one needing a GPU" if gpu else "none needing a GPU"
    heavy = next((d.name for d in deps if d.resources.num_cpus >= 1), None)
    cpu = f"{heavy} the only one asking for a whole CPU" if heavy else "none asking for a whole CPU"
    replicas = deps[0].num_replicas
    return (
        f"{len(members)} neighbouring deployments, {kind}, {cpu}, {replicas} replica(s) each on the same node: "
        f"one actor per replica, so {hops} call(s) between them per request run in process instead of a Ray hop each"
    )


def _graph_order(plan: Plan) -> dict[str, int]:
    """Deployments by their first call in the plan's node order (handle-only ones after, by name)."""
    rank: dict[str, int] = {}
    for node in plan.nodes:
        if node.kind == "call" and node.deployment and node.deployment not in rank:
            rank[node.deployment] = len(rank)
    for dep in sorted(plan.deployments, key=lambda d: d.name):
        rank.setdefault(dep.name, len(rank))
    return rank


def _node_refs(args: list[ArgPlan]) -> Iterator[str]:
    for arg in args:
        if isinstance(arg, NodeRef):
            yield arg.node
