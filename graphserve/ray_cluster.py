"""``--cluster ray:auto``: the nodes of a live Ray cluster, as the ClusterPlan the planner places on.

Each alive node becomes a :class:`~graphserve.plan.ClusterNodePlan` with its Ray node id,
its IP address, its CPUs and GPUs and its labels (Ray's own ``ray.io/*`` labels left
out); it is named ``<address>/<first 12 hex digits of its id>``, which stays readable when
several nodes share an address (a cluster on one machine). Ray is imported here only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from graphserve.errors import GraphError
from graphserve.plan import ClusterNodePlan, ClusterPlan

CLIENT_MODE_REFUSED = (
    "ray:// client mode is not supported: graphserve passes object references between actors and "
    "waits on them from the ingress's event loop, which Ray Client does not offer; run graphserve on a "
    "node of the cluster with --address auto (or the head's HOST:6379)"
)


def node_name(address: str, node_id: str) -> str:
    return f"{address}/{node_id[:12]}"


def nodes_of(ray_nodes: list[dict[str, Any]]) -> list[ClusterNodePlan]:
    """The alive nodes of ``ray.nodes()``, in a fixed order (by address, then id)."""
    out = []
    for node in ray_nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources") or {}
        address = str(node.get("NodeManagerAddress") or "")
        node_id = str(node["NodeID"])
        labels = {str(k): str(v) for k, v in (node.get("Labels") or {}).items() if not str(k).startswith("ray.io/")}
        out.append(
            ClusterNodePlan(
                name=node_name(address, node_id),
                cpus=float(resources.get("CPU", 0.0)),
                gpus=float(resources.get("GPU", 0.0)),
                address=address or None,
                id=node_id,
                labels=labels,
            )
        )
    return sorted(out, key=lambda n: (n.address or "", n.id or ""))


def read_ray_cluster(address: str = "auto") -> ClusterPlan:
    """The live cluster at ``address`` (joined for the moment it takes, unless already joined)."""
    if address.startswith("ray://"):
        raise GraphError(CLIENT_MODE_REFUSED)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise GraphError(f"--cluster ray:{address} needs ray (pip install 'graphserve[ray]'): {exc}") from exc
    joined_here = not ray.is_initialized()
    try:
        if joined_here:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        nodes = nodes_of(ray.nodes())
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise GraphError(f"cannot read the Ray cluster at {address!r}: {type(exc).__name__}: {exc}") from exc
    finally:
        if joined_here and ray.is_initialized():
            ray.shutdown()
    if not nodes:
        raise GraphError(f"the Ray cluster at {address!r} has no alive nodes")
    return ClusterPlan(cpus=sum(n.cpus for n in nodes), gpus=sum(n.gpus for n in nodes), source="detected", nodes=nodes)
