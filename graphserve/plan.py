"""The Plan: what a runtime executes. Plain pydantic data, versioned, JSON round-trip.

A Plan names Python code only by import path (``module:qualname``), so one written
to disk by ``graphserve build -o plan.json`` can be served later by re-importing the
deployments. A Plan built in process also keeps the objects themselves (not
serialized), so deployments defined inside a function or a test still run in process;
:meth:`Plan.to_json` refuses, with a clear error, what JSON cannot hold.

``to_json`` is byte-identical for the same graph: keys sorted, order fixed by the
planner.

Versions: 2 added :class:`FusionPlan` (actor fusion, ``compiler/fusion.py``); a version 1
plan still reads, as a plan without fused groups.
"""

from __future__ import annotations

import importlib
import json
import traceback
from types import ModuleType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from graphserve.errors import PlanError

PLAN_VERSION = 2
READABLE_VERSIONS = (1, 2)  # a version 1 plan has no fusion: every deployment runs alone

# The defaults of a deployment's and of ``@gs.batch``'s options, one place for the DSL, the
# planner and the runtime.
DEFAULT_MAX_ONGOING_REQUESTS = 100
DEFAULT_MAX_BATCH_SIZE = 10
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01
DEFAULT_MAX_CONCURRENT_BATCHES = 1


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class NodeRef(_Data):
    kind: Literal["node"] = "node"
    node: str


class ConstValue(_Data):
    kind: Literal["const"] = "const"
    value: Any = None


class HandleRef(_Data):
    kind: Literal["handle"] = "handle"
    deployment: str


class StructValue(_Data):
    kind: Literal["struct"] = "struct"
    form: Literal["list", "tuple", "dict"]
    items: list[tuple[Any, ArgPlan]]


ArgPlan = Annotated[NodeRef | ConstValue | HandleRef | StructValue, Field(discriminator="kind")]
StructValue.model_rebuild()


class BatchingPlan(_Data):
    method: str
    max_batch_size: int
    batch_wait_timeout_s: float
    max_concurrent_batches: int
    # the batcher adapts its size limit and wait to ``latency_budget_s`` (at most the values above)
    adaptive: bool = False
    latency_budget_s: float | None = None
    # max_batch_size is batch_size_fn's measure (tokens, nodes...), not a count of calls
    sized_by_fn: bool = False


class ChoicePlan(_Data):
    """Where one tunable of a deployment came from: the user wrote it, or the SLO planner chose it."""

    field: str  # num_replicas, max_ongoing_requests, num_cpus, num_gpus, <method>.max_batch_size, ...
    value: Any
    source: Literal["user", "planned", "default"]
    reason: str | None = None


class SLOPlan(_Data):
    """The latency objective a plan was made for: ``p99_s`` at ``rate_rps`` requests per second."""

    p99_s: float
    rate_rps: float
    headroom: float = 0.8  # the planner aims for a predicted p99 of at most headroom x p99_s


class LatencyPrediction(_Data):
    p50_s: float
    p99_s: float


class PredictionPlan(_Data):
    """What the simulator predicted for the chosen values at the SLO's rate."""

    rate_rps: float
    p50_s: float
    p99_s: float
    throughput_rps: float
    rejected: int
    requests: int
    nodes: dict[str, LatencyPrediction] = Field(default_factory=dict)
    utilization: dict[str, float] = Field(default_factory=dict, description="deployment -> mean replica utilization")
    # False: no plan met p99 x headroom; these values meet the p99 itself (warning GS204)
    within_headroom: bool = True


class ResourcesPlan(_Data):
    num_cpus: float = 0.0
    num_gpus: float = 0.0


class DeploymentPlan(_Data):
    name: str
    import_path: str
    kind: Literal["class", "function"]
    init_args: list[ArgPlan] = Field(default_factory=list)
    init_kwargs: dict[str, ArgPlan] = Field(default_factory=dict)
    num_replicas: int = 1
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    max_queued_requests: int = -1
    max_retries: int = 0
    resources: ResourcesPlan = Field(default_factory=ResourcesPlan)
    batching: list[BatchingPlan] = Field(default_factory=list)
    handles: list[str] = Field(default_factory=list)
    route_prefix: str | None = None
    location: str | None = None
    # Ray Serve's user_config (JSON): passed to the instance's reconfigure() when each replica starts
    user_config: Any = None
    # options the user wrote (num_replicas, max_ongoing_requests, num_cpus, num_gpus, <method>.max_batch_size,
    # <method>.batch_wait_timeout_s, ...): the SLO planner keeps them as constraints
    user_set: list[str] = Field(default_factory=list)
    # False (``gs.deployment(fuse=False)``): never shares an actor with another deployment (actor fusion)
    fuse: bool = True
    choices: list[ChoicePlan] = Field(default_factory=list)
    reason: str | None = None  # the planner's summary in words


class GuardTerm(_Data):
    """Holds when switch ``switch`` took arm number ``arm`` (-1: its default)."""

    switch: str
    arm: int


class BranchPlan(_Data):
    value: Any
    arg: ArgPlan


class NodePlan(_Data):
    id: str
    kind: Literal["input", "attr", "call", "switch", "output"]
    location: str | None = None
    # call
    deployment: str | None = None
    method: str | None = None
    function: str | None = None  # import path of a glue function
    args: list[ArgPlan] = Field(default_factory=list)
    kwargs: dict[str, ArgPlan] = Field(default_factory=dict)
    # attr
    key: Any = None
    access: Literal["attr", "item"] = "attr"
    # switch
    selector: str | None = None
    branches: list[BranchPlan] = Field(default_factory=list)
    default: ArgPlan | None = None
    # output
    form: Literal["single", "list", "tuple", "dict"] = "single"
    keys: list[str] = Field(default_factory=list)
    # planning
    type: str = "Any"
    inputs: list[str] = Field(default_factory=list)
    consumers: list[str] = Field(default_factory=list)
    stage: int = 0
    guard: list[list[GuardTerm]] | None = None  # None: always runs; else any-of all-of terms
    fused: bool = False
    fused_reason: str | None = None
    # the node's share of the graph's latency objective, when a planner set one; the live
    # page (``/-/``) colours the node by how close its p99 latency comes to it
    latency_budget_s: float | None = None
    predicted: LatencyPrediction | None = None


class ReplicaPlan(_Data):
    deployment: str
    index: int
    node: str
    num_cpus: float
    num_gpus: float


class ClusterNodePlan(_Data):
    """One machine of a cluster (``--cluster nodes=FILE``, or read from a live Ray cluster with
    ``--cluster ray:auto``). ``id``: its Ray node id; ``address``: its IP. On Ray a replica planned
    on it is scheduled there (by id, else by an address only one live node has); ``labels``:
    free-form facts (a Ray node's labels)."""

    name: str
    cpus: float
    gpus: float = 0.0
    address: str | None = None
    id: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ClusterPlan(_Data):
    cpus: float
    gpus: float
    source: Literal["given", "detected"]
    nodes: list[ClusterNodePlan] = Field(default_factory=list)  # empty: one node named node-0


class FusedGroupPlan(_Data):
    """Deployments the Ray backend runs in one actor process per replica (actor fusion): the
    calls between them are in-process function calls instead of a Ray hop each. ``name``:
    the members joined by ``+``; ``deployments``: the members in graph order; ``reason``: why, in
    words. The local backend ignores groups (every call there is already in process)."""

    name: str
    deployments: list[str]
    hops_saved: int  # calls between members per request (graph edges and handles) that stay in process
    reason: str


class KeptApartPlan(_Data):
    """Two neighbouring deployments (one feeds or holds a handle to the other) that actor fusion
    left in processes of their own, and the rule that kept them apart, in words."""

    deployments: list[str]
    reason: str


class FusionPlan(_Data):
    """What actor fusion decided (``compiler/fusion.py``): the groups, and the neighbours kept apart."""

    enabled: bool = True  # False: turned off (``graphserve build --no-fuse``); no groups
    groups: list[FusedGroupPlan] = Field(default_factory=list)
    kept_apart: list[KeptApartPlan] = Field(default_factory=list)


class DiagnosticPlan(_Data):
    code: str
    message: str
    node: str | None = None
    location: str | None = None
    hint: str | None = None
    severity: str = "warning"


class Plan(_Data):
    """An executable, serializable description of one graph."""

    version: int = PLAN_VERSION
    name: str
    route_prefix: str | None = None
    timeout_s: float | None = None
    input: str
    output: str
    raw_ingress: bool = False
    http_request: bool = False  # the ingress takes the Starlette Request, not the JSON body
    input_schema: str | None = None
    input_json_schema: dict[str, Any] | None = None
    nodes: list[NodePlan]
    deployments: list[DeploymentPlan]
    stages: list[list[str]]
    replicas: list[ReplicaPlan] = Field(default_factory=list)
    cluster: ClusterPlan | None = None
    warnings: list[DiagnosticPlan] = Field(default_factory=list)
    slo: SLOPlan | None = None
    prediction: PredictionPlan | None = None
    fusion: FusionPlan | None = None  # None: a version 1 plan, nothing fused

    _objects: dict[str, Any] = PrivateAttr(default_factory=dict)

    # -- lookups -----------------------------------------------------------------------
    def node(self, node_id: str) -> NodePlan:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def deployment(self, name: str) -> DeploymentPlan:
        for dep in self.deployments:
            if dep.name == name:
                return dep
        raise KeyError(name)

    def fused_group(self, deployment: str) -> FusedGroupPlan | None:
        """The fused group ``deployment`` belongs to (None: it runs in an actor of its own)."""
        for group in self.fusion.groups if self.fusion is not None else ():
            if deployment in group.deployments:
                return group
        return None

    def resolve(self, import_path: str) -> Any:
        """The object an import path names: from this in-process build, else imported."""
        if import_path in self._objects:
            return self._objects[import_path]
        return import_object(import_path)

    def register(self, import_path: str, obj: Any) -> None:
        self._objects[import_path] = obj

    # -- JSON --------------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        """Deterministic JSON; a PlanError names anything JSON cannot hold."""
        problems = list(self._serialization_problems())
        if problems:
            raise PlanError(f"plan {self.name!r} cannot be written as JSON:\n  " + "\n  ".join(problems))
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        data = json.loads(text)
        version = data.get("version") if isinstance(data, dict) else None
        if version not in READABLE_VERSIONS:
            readable = " and ".join(str(v) for v in READABLE_VERSIONS)
            raise PlanError(f"plan version {version!r} is not supported (this graphserve reads versions {readable})")
        return cls.model_validate(data)

    def _serialization_problems(self) -> list[str]:
        problems: list[str] = []
        for dep in self.deployments:
            problems += _path_problems(dep.import_path, f"deployment {dep.name!r}")
            for i, arg in enumerate(dep.init_args):
                problems += _arg_problems(arg, f"deployment {dep.name!r} constructor argument {i}")
            for key, arg in dep.init_kwargs.items():
                problems += _arg_problems(arg, f"deployment {dep.name!r} constructor argument {key!r}")
        for node in self.nodes:
            if node.function:
                problems += _path_problems(node.function, f"glue node {node.id!r}")
            for i, arg in enumerate(node.args):
                problems += _arg_problems(arg, f"node {node.id!r} argument {i}")
            for key, arg in node.kwargs.items():
                problems += _arg_problems(arg, f"node {node.id!r} argument {key!r}")
        if self.input_schema:
            problems += _path_problems(self.input_schema, "the input schema")
        return problems


def has_import_path(path: str) -> bool:
    """Whether ``path`` (``module:qualname``) can name its object in another process: not
    defined inside a function (``<locals>``), not a lambda, not in ``__main__``."""
    return not ("<locals>" in path or "<lambda>" in path or path.startswith("__main__:"))


def _path_problems(path: str, what: str) -> list[str]:
    if "<locals>" in path or "<lambda>" in path:
        return [f"{what} is {path}, which cannot be imported by name: define it at module level"]
    if path.startswith("__main__:"):
        return [f"{what} is defined in __main__; put it in an importable module"]
    return []


def _arg_problems(arg: Any, what: str) -> list[str]:
    if isinstance(arg, ConstValue):
        try:
            json.dumps(arg.value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return [
                f"{what} ({type(arg.value).__name__}) is not JSON: {exc}; "
                "pass JSON values (load large objects in the constructor from a path)"
            ]
    if isinstance(arg, StructValue):
        return [p for _, item in arg.items for p in _arg_problems(item, what)]
    return []


def import_path_of(obj: Any) -> str:
    """``module:qualname`` of a class or function."""
    module = getattr(obj, "__module__", None) or "__main__"
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    return f"{module}:{qualname}"


def imported(module_name: str, what: str) -> ModuleType:
    """Import ``module_name`` for ``what`` (as the error names it). A module that is missing or
    raises while it is imported is a PlanError naming it and what it raised (type, message and
    where), so a command prints one line, not the import's traceback."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise PlanError(f"cannot import {what}: {exc}") from exc
    except Exception as exc:  # the module's own code failed: whatever it raised is the user's error
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        raise PlanError(f"cannot import {what}: {module_name} raised {type(exc).__name__}: {exc}{where}") from exc


def import_object(path: str) -> Any:
    """Import ``module:qualname`` (or ``module.qualname``)."""
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    obj: Any = imported(module_name, repr(path))
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise PlanError(f"cannot import {path!r}: {module_name} has no attribute {qualname!r}") from exc
    return obj
