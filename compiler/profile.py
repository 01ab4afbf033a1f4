"""Measured node profiles: plain, versioned pydantic data, JSON round trip.

``graphserve profile`` (``gs.profile``) runs a graph on the local runtime and writes one
:class:`Profile`; ``graphserve simulate`` and the planner read it. A profile holds, per
deployment call node of the graph:

- ``visit_rate``: the fraction of requests that reached the node (branches!);
- ``latency``: the distribution of one call's wall time (for ``@gs.batch`` methods:
  ``batches``, one distribution per batch size, and a straight-line ``fit`` of the cost
  curve t(b) = fixed + per_item x b);
- ``cpu_share``: process CPU time over wall time during the node's calls; a node near 1
  holds the GIL (its replicas share one core on the local runtime), one near 0 waits
  (I/O, a GPU, a sleep) and its replicas add capacity;
- ``runs_on``: ``event_loop`` (async methods) or ``thread_pool`` (sync methods);
- ``machine_wait_s``: how long its timed calls waited for a core that other processes
  held; the profiler leaves that out of the latencies (it is the neighbours' work).

and per switch how often each arm was taken, plus ``paths``: how often each combination
of arms was taken together by one request (the simulator draws a request's branches
from these, so correlated switches stay correlated).

A distribution keeps 119 quantiles of its samples (``QUANTILE_LEVELS``: every 1% up to
99%, every 0.1% up to 99.9%, every 0.01% up to 100%), so a simulator draws service times
from the measured shape, not from a mean; the finer tail keeps a rare outlier (a pause of
the machine while profiling) at its own weight instead of spreading it over the top 1%.

The JSON is byte-stable apart from the measurements: keys sorted, nodes in plan order,
times rounded to 0.1 us. ``fingerprint`` identifies the graph's structure (nodes,
wiring, code) but not its tunables (replicas, batching, limits), so one profile serves
every variant of a plan the planner tries.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graphserve.errors import ProfileError
from graphserve.plan import Plan

PROFILE_VERSION = 1
#: the levels the quantiles of a distribution are kept at: 0, 0.01, ..., 0.99 (100), then
#: 0.991, ..., 0.999 (9), then 0.9991, ..., 0.9999 and 1 (10)
QUANTILE_LEVELS: tuple[float, ...] = tuple(
    [i / 100 for i in range(100)] + [round(0.99 + i / 1000, 4) for i in range(1, 10)]
    + [round(0.999 + i / 10000, 5) for i in range(1, 11)]
)  # fmt: skip
# draw(): u in [start, next start) maps linearly onto quantiles from index ``first``, ``scale`` per unit of u
_SEGMENTS = ((0.999, 10000.0, 108), (0.99, 1000.0, 99), (0.0, 100.0, 0))
FEW_SAMPLES = 50  # fewer samples than this for a distribution: a warning
_DIGITS = 7  # seconds rounded to 0.1 us


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Distribution(_Data):
    """Summary and quantiles of measured durations (seconds)."""

    count: int
    mean_s: float
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    quantiles_s: list[float] = Field(description="the quantiles at QUANTILE_LEVELS (119)")

    @classmethod
    def of(cls, samples: Sequence[float]) -> Distribution:
        if not samples:
            raise ProfileError("a distribution needs at least one sample")
        ordered = sorted(samples)
        qs = [_round(_quantile(ordered, level)) for level in QUANTILE_LEVELS]
        return cls(
            count=len(ordered),
            mean_s=_round(sum(ordered) / len(ordered)),
            p50_s=_round(_quantile(ordered, 0.5)),
            p90_s=_round(_quantile(ordered, 0.9)),
            p99_s=_round(_quantile(ordered, 0.99)),
            max_s=_round(ordered[-1]),
            quantiles_s=qs,
        )

    @classmethod
    def constant(cls, seconds: float, count: int = 1000) -> Distribution:
        """Every sample ``seconds`` (deterministic service; tests and what-if profiles)."""
        return cls.of([seconds]).model_copy(update={"count": count})

    def sample(self, u: float) -> float:
        """The value at quantile ``u`` in [0, 1) (linear between the stored quantiles)."""
        return draw(self.quantiles_s, u)

    def scaled(self, factor: float) -> Distribution:
        """Every duration times ``factor`` (the same shape, slower or faster)."""
        return self.model_copy(
            update={
                "mean_s": _round(self.mean_s * factor),
                "p50_s": _round(self.p50_s * factor),
                "p90_s": _round(self.p90_s * factor),
                "p99_s": _round(self.p99_s * factor),
                "max_s": _round(self.max_s * factor),
                "quantiles_s": [_round(q * factor) for q in self.quantiles_s],
            }
        )


class BatchPoint(_Data):
    """The latency of one whole batch of ``batch_size`` items."""

    batch_size: int
    latency: Distribution


class BatchFit(_Data):
    """Least squares over the medians: t(b) ~ fixed_s + per_item_s x b."""

    fixed_s: float
    per_item_s: float


class SwitchProfile(_Data):
    """How often each arm of a switch was taken (arm -1: the default)."""

    node: str
    evaluations: int
    arms: dict[str, int] = Field(description="arm number (as text; -1 is the default) -> times taken")

    def probability(self, arm: int) -> float:
        return self.arms.get(str(arm), 0) / self.evaluations if self.evaluations else 0.0


class PathProfile(_Data):
    """One combination of switch arms taken together by a request, and how many requests took it."""

    arms: dict[str, int] = Field(description="switch node -> arm taken (switches not evaluated are absent)")
    requests: int


class NodeProfile(_Data):
    """The measurements of one deployment call node."""

    node: str
    deployment: str
    method: str
    visits: int = Field(description="calls seen while running the sample requests through the graph")
    visit_rate: float = Field(description="visits / requests run")
    runs_on: Literal["event_loop", "thread_pool"]
    cpu_share: float = Field(description="process CPU time / wall time during the node's calls, 0..1")
    latency: Distribution | None = Field(None, description="one call's wall time (not batched)")
    batches: list[BatchPoint] = Field(default_factory=list, description="@gs.batch: latency per batch size")
    fit: BatchFit | None = None
    machine_wait_s: float = Field(
        default=0.0,
        description="seconds the node's timed calls waited for a core other processes held (left out of its latencies)",
    )
    warnings: list[str] = Field(default_factory=list)

    @property
    def batched(self) -> bool:
        return bool(self.batches)

    def scaled(self, factor: float) -> NodeProfile:
        """This node with its whole cost curve (every batch size, and its fit) times ``factor``."""
        return self.model_copy(
            update={
                "latency": self.latency.scaled(factor) if self.latency is not None else None,
                "batches": [p.model_copy(update={"latency": p.latency.scaled(factor)}) for p in self.batches],
                "fit": (
                    BatchFit(fixed_s=_round(self.fit.fixed_s * factor), per_item_s=_round(self.fit.per_item_s * factor))
                    if self.fit is not None
                    else None
                ),
            }
        )


class MachineProfile(_Data):
    cpu: str
    cores: int
    usable_cores: int
    gpus: list[str] = Field(default_factory=list)
    python: str
    platform: str


class Profile(_Data):
    """Everything measured about one graph; see the module docstring."""

    version: int = PROFILE_VERSION
    graph: str
    fingerprint: str
    machine: MachineProfile
    requests: int = Field(description="sample requests run through the graph")
    sample_requests: int = Field(description="lines in the requests file")
    duration_s: float = Field(description="time box asked for")
    nodes: list[NodeProfile]
    switches: list[SwitchProfile] = Field(default_factory=list)
    paths: list[PathProfile] = Field(default_factory=list)
    request_cpu_s: float = Field(
        default=0.0,
        description="the runtime's own CPU time per request (validation, the executor between calls), on the "
        "event loop; the calls' CPU and the HTTP server's are not in it",
    )
    machine_wait_share: float | None = Field(
        default=None,
        description="share of the timed calls' wall time spent waiting for a core other processes held, "
        "left out of the latencies (None: the OS does not report it)",
    )
    warnings: list[str] = Field(default_factory=list)

    # -- lookups -----------------------------------------------------------------------
    def node(self, node_id: str) -> NodeProfile:
        for node in self.nodes:
            if node.node == node_id:
                return node
        raise ProfileError(f"profile of graph {self.graph!r} has no node {node_id!r}")

    def with_costs_scaled(self, factors: Mapping[str, float]) -> Profile:
        """A copy with the cost curve of each node in ``factors`` times its factor (node id ->
        factor; e.g. what a server measured over what was profiled). Unknown nodes: ProfileError."""
        for node_id in factors:
            self.node(node_id)
        nodes = [n.scaled(factors[n.node]) if n.node in factors else n for n in self.nodes]
        return self.model_copy(update={"nodes": nodes})

    def switch(self, node_id: str) -> SwitchProfile | None:
        for switch in self.switches:
            if switch.node == node_id:
                return switch
        return None

    # -- JSON --------------------------------------------------------------------------
    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "profile") -> Profile:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProfileError(f"{source} is not JSON: {exc}") from None
        version = data.get("version") if isinstance(data, dict) else None
        if version != PROFILE_VERSION:
            raise ProfileError(
                f"{source}: profile version {version!r} is not supported (this graphserve reads version "
                f"{PROFILE_VERSION}); run `graphserve profile` again"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ProfileError(
                f"{source} is not a graphserve profile: {where}: {first['msg']} ({exc.error_count()} problems)"
            ) from None

    @classmethod
    def load(cls, path: str) -> Profile:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ProfileError(f"cannot read profile {path!r}: {exc.strerror or exc}") from None
        return cls.from_json(text, source=path)

    @classmethod
    def assumed(
        cls,
        plan: Plan,
        costs: Mapping[str, float | Distribution | Mapping[int, float | Distribution]],
        paths: Sequence[tuple[Mapping[str, int], float]] = (),
        cpu_share: Mapping[str, float] | None = None,
        runs_on: Mapping[str, Literal["event_loop", "thread_pool"]] | None = None,
    ) -> Profile:
        """A profile of assumed costs instead of measurements (tests, what-if questions).

        ``costs``: per call node, a constant number of seconds, a distribution, or for a
        batched node {batch size: seconds or distribution}. ``paths``: (switch arms,
        weight) pairs; none for a graph without switches."""
        calls = [n for n in plan.nodes if n.kind == "call" and n.deployment]
        missing = sorted({n.id for n in calls} - set(costs))
        if missing:
            raise ProfileError(f"assumed costs are missing for nodes: {', '.join(missing)}")
        weighted = list(paths) or [({}, 1.0)]
        scale = 1000 / sum(w for _, w in weighted)
        counts = [max(1, round(w * scale)) for _, w in weighted]
        total = sum(counts)
        switch_counts: dict[str, dict[str, int]] = {}
        for (arms, _), count in zip(weighted, counts, strict=True):
            for switch, arm in arms.items():
                bucket = switch_counts.setdefault(switch, {})
                bucket[str(arm)] = bucket.get(str(arm), 0) + count
        nodes = []
        for n in calls:
            cost = costs[n.id]
            latency, batches, fit = None, [], None
            if isinstance(cost, Mapping):
                batches = [BatchPoint(batch_size=b, latency=_dist(c)) for b, c in sorted(cost.items())]
                fit = fit_line([(p.batch_size, p.latency.p50_s) for p in batches])
            else:
                latency = _dist(cost)
            nodes.append(
                NodeProfile(
                    node=n.id,
                    deployment=n.deployment or "",
                    method=n.method or "__call__",
                    visits=total,
                    visit_rate=1.0,
                    runs_on=(runs_on or {}).get(n.id, "event_loop"),
                    cpu_share=(cpu_share or {}).get(n.id, 0.0),
                    latency=latency,
                    batches=batches,
                    fit=fit,
                )
            )
        return cls(
            graph=plan.name,
            fingerprint=fingerprint(plan),
            machine=MachineProfile(cpu="assumed", cores=1, usable_cores=1, python="", platform="assumed"),
            requests=total,
            sample_requests=0,
            duration_s=0.0,
            nodes=nodes,
            switches=[
                SwitchProfile(node=s, evaluations=sum(arms.values()), arms=arms) for s, arms in switch_counts.items()
            ],
            paths=[PathProfile(arms=dict(arms), requests=c) for (arms, _), c in zip(weighted, counts, strict=True)],
        )

    def check_fits(self, plan: Plan) -> None:
        """Raise a ProfileError naming the difference when this profile was measured on another graph."""
        if self.fingerprint == fingerprint(plan):
            return
        measured = {n.node for n in self.nodes}
        calls = {n.id for n in plan.nodes if n.kind == "call" and n.deployment}
        missing, extra = sorted(calls - measured), sorted(measured - calls)
        what = f"the profile was measured on graph {self.graph!r} and the plan is graph {plan.name!r}"
        if plan.name == self.graph:
            what = f"the profile was measured on another version of graph {plan.name!r}"
        details = []
        if missing:
            details.append(f"nodes not in the profile: {', '.join(missing)}")
        if extra:
            details.append(f"profiled nodes not in the plan: {', '.join(extra)}")
        if not details:
            details.append("the nodes are the same but their wiring or code differs")
        raise ProfileError(f"{what}: {'; '.join(details)}; profile the plan's graph with `graphserve profile`")


def _dist(cost: float | Distribution) -> Distribution:
    return cost if isinstance(cost, Distribution) else Distribution.constant(float(cost))


def fingerprint(plan: Plan) -> str:
    """A hash of the graph's structure: nodes, wiring and code, not replicas, batching or limits."""
    deployments = {d.name: d.import_path for d in plan.deployments}
    shape = [
        [
            n.id,
            n.kind,
            n.deployment,
            deployments.get(n.deployment or ""),
            n.method,
            n.function,
            n.inputs,
            n.selector,
            len(n.branches),
            n.default is not None,
            [[(t.switch, t.arm) for t in conj] for conj in n.guard] if n.guard is not None else None,
        ]
        for n in plan.nodes
    ]
    text = json.dumps([plan.input, plan.output, shape], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit_line(points: Sequence[tuple[int, float]]) -> BatchFit:
    """Least squares t = fixed + per_item x b over (b, t) points (one point: all fixed)."""
    n = len(points)
    if n == 1:
        return BatchFit(fixed_s=_round(points[0][1]), per_item_s=0.0)
    mean_b = sum(b for b, _ in points) / n
    mean_t = sum(t for _, t in points) / n
    var = sum((b - mean_b) ** 2 for b, _ in points)
    slope = sum((b - mean_b) * (t - mean_t) for b, t in points) / var if var else 0.0
    return BatchFit(fixed_s=_round(mean_t - slope * mean_b), per_item_s=_round(slope))


def batch_service(points: Sequence[BatchPoint], size: int, u: float) -> float:
    """A batch of ``size``'s duration at quantile ``u``: measured sizes as is, others linear between
    (and beyond) the nearest measured sizes."""
    sizes = [p.batch_size for p in points]
    i = bisect.bisect_left(sizes, size)
    if i < len(sizes) and sizes[i] == size:
        return points[i].latency.sample(u)
    if len(points) == 1:
        return points[0].latency.sample(u)
    lo, hi = (i - 1, i) if 0 < i < len(points) else ((0, 1) if i == 0 else (len(points) - 2, len(points) - 1))
    t_lo, t_hi = points[lo].latency.sample(u), points[hi].latency.sample(u)
    b_lo, b_hi = sizes[lo], sizes[hi]
    return max(0.0, t_lo + (t_hi - t_lo) * (size - b_lo) / (b_hi - b_lo))


def draw(quantiles: Sequence[float], u: float) -> float:
    """The value at quantile ``u`` in [0, 1) of a distribution kept at ``QUANTILE_LEVELS``
    (linear between neighbouring levels)."""
    for start, scale, first in _SEGMENTS:
        if u >= start:
            x = (u - start) * scale
            k = int(x)
            i = first + k
            if i >= len(quantiles) - 1:
                return quantiles[-1]
            return quantiles[i] + (quantiles[i + 1] - quantiles[i]) * (x - k)
    return quantiles[0]


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(ordered) == 1:
        return ordered[0]
    x = q * (len(ordered) - 1)
    i = math.floor(x)
    if i >= len(ordered) - 1:
        return ordered[-1]
    return ordered[i] + (ordered[i + 1] - ordered[i]) * (x - i)


def _round(seconds: float) -> float:
    return round(float(seconds), _DIGITS)
