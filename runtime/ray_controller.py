"""One graph's replicas shared by several ingress processes: a small named Ray actor owns them.

With ``shared=True`` (``graphserve deploy ... --backend ray --address auto``) the Ray backend
does not create replica actors itself. It asks the graph's controller, a detached actor named
``graphserve:<graph>`` in the backend's namespace (created by the first ingress,
``get_if_exists`` for the others), to create them once; every ingress then looks the
replicas up by name and routes to them by its own view of load. The controller:

- creates the replicas once, as detached named actors (Ray restarts them, ``max_restarts``);
  a later ingress whose plan differs (another fingerprint) is refused, naming the graph;
- counts the ingresses attached to it: stopping one (``detach``) leaves the replicas to the
  others; the last one to stop removes the replicas and the controller;
- removes everything on :func:`delete_graph` (``graphserve delete NAME --address auto``),
  which is also the way out after an ingress was killed without stopping (it never detached).
"""

from __future__ import annotations

import contextlib
from typing import Any

import ray

from graphserve.errors import GraphError

from .ray_actor import ReplicaActor, ReplicaSpec
from .ray_fused import FusedActor, FusedSpec

Creation = tuple[str, dict[str, Any], ReplicaSpec | FusedSpec]  # actor name, Ray options, what it builds


def controller_name(graph: str) -> str:
    return f"graphserve:{graph}"


class GraphController:
    """Owns one graph's replica actors and knows which ingress processes use them."""

    def __init__(self, graph: str, namespace: str) -> None:
        self.graph = graph
        self.namespace = namespace
        self.fingerprint: str | None = None
        self.names: list[str] = []
        self.ingresses: set[str] = set()

    def ensure(self, fingerprint: str, creations: list[Creation]) -> list[str]:
        """Create the replicas unless they exist; their names. A different plan is refused."""
        if self.fingerprint is not None and self.fingerprint != fingerprint:
            raise GraphError(
                f"graph {self.graph!r} already runs on this Ray cluster (namespace {self.namespace!r}) with a "
                f"different plan; stop its ingresses or run `graphserve delete {self.graph} --address ...` first"
            )
        if self.fingerprint is None:
            remote: Any = ray.remote  # its overloads do not know concurrency_groups
            classes = {kind: remote(concurrency_groups={"control": 1})(kind) for kind in (ReplicaActor, FusedActor)}
            for name, options, spec in creations:
                actor_class = classes[FusedActor if isinstance(spec, FusedSpec) else ReplicaActor]
                actor_class.options(**options, name=name, namespace=self.namespace, lifetime="detached").remote(spec)
            self.fingerprint = fingerprint
            self.names = [name for name, _, _ in creations]
        return self.names

    def attach(self, ingress: str) -> int:
        self.ingresses.add(ingress)
        return len(self.ingresses)

    def detach(self, ingress: str) -> int:
        """Forget ``ingress``; the last one out removes the replicas. How many remain."""
        self.ingresses.discard(ingress)
        if not self.ingresses:
            self.remove_replicas()
        return len(self.ingresses)

    def attached(self) -> list[str]:
        return sorted(self.ingresses)

    def remove_replicas(self) -> int:
        removed = 0
        for name in self.names:
            with contextlib.suppress(ValueError):  # already gone
                ray.kill(ray.get_actor(name, namespace=self.namespace))
                removed += 1
        self.names, self.fingerprint = [], None
        return removed


def controller_class() -> Any:
    return ray.remote(num_cpus=0, max_restarts=0)(GraphController)


def delete_graph(graph: str, namespace: str) -> int:
    """Remove ``graph``'s replicas and controller from the connected cluster; how many replicas.

    Raises GraphError when no such graph runs in ``namespace``."""
    try:
        controller = ray.get_actor(controller_name(graph), namespace=namespace)
    except ValueError:
        raise GraphError(f"no graph {graph!r} runs on this Ray cluster (namespace {namespace!r})") from None
    removed: Any = ray.get(controller.remove_replicas.remote())
    ray.kill(controller)
    return int(removed)
