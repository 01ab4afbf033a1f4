"""W6, the SLO-planning workload: a CPU-bound preprocess, two GPU-like batched models with
different cost curves (the classifier behind a 30% branch) and a join; as a graphserve app
and as a Ray Serve application with one hand setting (the same batch size and wait for both
models, the same replica count everywhere).

The cost curves are the issue's (4 ms + 0.6 ms x n, 10 ms + 0.2 ms x n) times ``COST_SCALE``
(3): at the issue's own costs a single replica of each model keeps up to ~1200 req/s, beyond
what one graphserve process serves over HTTP on a 2-core machine (~900 req/s), so no rate
this machine can offer would need a second replica. Three times slower models need one
from ~400 req/s, well inside the HTTP capacity (the SLO scales with them: 150 ms).

    python -m bench.w6_workload --plan plan.json --port 0          # graphserve, prints 'PORT <n>'
    python -m bench.w6_workload --rayserve 8,0.005,1 --port 0      # Ray Serve, batch 8, wait 5 ms, 1 replica
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

import graphserve as gs

PREPROCESS_CPU_S = 0.0005
COST_SCALE = 3.0
DETECT = (0.004 * COST_SCALE, 0.0006 * COST_SCALE)  # seconds: fixed + per item
CLASSIFY = (0.010 * COST_SCALE, 0.0002 * COST_SCALE)
BRANCH_AT = 0.7  # x uniform in [0, 1): 30% take the classifier
# x = 0.00 .. 0.99 in a shuffled order (37 is coprime to 100), so any prefix takes the branch ~30%
BODIES = [f'{{"x": {i * 37 % 100 / 100}}}'.encode() for i in range(100)]


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@gs.deployment
class Preprocess:
    def __call__(self, x: float) -> float:
        busy(PREPROCESS_CPU_S)
        return float(x)


@gs.deployment
class Detector:
    @gs.batch
    async def __call__(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(DETECT[0] + DETECT[1] * len(xs))
        return xs


@gs.deployment
class Classifier:
    @gs.batch
    async def __call__(self, xs: list[float]) -> list[float]:
        await asyncio.sleep(CLASSIFY[0] + CLASSIFY[1] * len(xs))
        return [x * 2 for x in xs]


@gs.deployment
class Join:
    async def __call__(self, detected: float, classified: float) -> dict[str, float]:
        return {"detected": detected, "classified": classified}


with gs.InputNode() as _inp:
    _x = Preprocess.bind().__call__.bind(_inp["x"])
    _detected = Detector.bind().__call__.bind(_x)
    _classified = gs.cond(_detected >= BRANCH_AT, Classifier.bind().__call__.bind(_detected), _detected)
    app = gs.graph(Join.bind().__call__.bind(_detected, _classified), name="w6")


def expected(x: float) -> dict[str, float]:
    return {"detected": x, "classified": 2 * x if x >= BRANCH_AT else x}


def rayserve_app(batch: int, wait_s: float, replicas: int = 1) -> Any:
    """The same pipeline on Ray Serve: an ingress, the hand setting on both batched models.

    Written as Ray Serve's performance guide says: no per-request access log (each replica
    would write a log line per call), the preprocess's response handed to the detector
    without the ingress awaiting it (only the detector's value decides the branch),
    ``max_ongoing_requests`` above the batch size (ray#43288), no CPUs reserved per replica
    so every replica fits a 2-CPU Ray."""
    from ray import serve
    from starlette.requests import Request

    options: dict[str, Any] = {
        "max_ongoing_requests": max(100, 2 * batch),
        "ray_actor_options": {"num_cpus": 0},
        "logging_config": {"enable_access_log": False, "log_level": "WARNING"},
    }

    class RsPreprocess:
        def __call__(self, x: float) -> float:
            busy(PREPROCESS_CPU_S)
            return float(x)

    class RsDetector:
        @serve.batch(max_batch_size=batch, batch_wait_timeout_s=wait_s)
        async def __call__(self, xs: list[float]) -> list[float]:
            await asyncio.sleep(DETECT[0] + DETECT[1] * len(xs))
            return xs

    class RsClassifier:
        @serve.batch(max_batch_size=batch, batch_wait_timeout_s=wait_s)
        async def __call__(self, xs: list[float]) -> list[float]:
            await asyncio.sleep(CLASSIFY[0] + CLASSIFY[1] * len(xs))
            return [x * 2 for x in xs]

    class RsIngress:
        def __init__(self, pre: Any, det: Any, cls: Any) -> None:
            self.pre, self.det, self.cls = pre, det, cls

        async def __call__(self, request: Request) -> Any:
            detected = await self.det.remote(self.pre.remote((await request.json())["x"]))
            classified = await self.cls.remote(detected) if detected >= BRANCH_AT else detected
            return {"detected": detected, "classified": classified}

    def d(cls: type) -> Any:
        return serve.deployment(cls, num_replicas=replicas, **options)

    ingress = serve.deployment(RsIngress, **options)  # one HTTP ingress, as graphserve's
    return ingress.bind(d(RsPreprocess).bind(), d(RsDetector).bind(), d(RsClassifier).bind())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", help="serve this plan on graphserve's local runtime")
    parser.add_argument(
        "--rayserve", metavar="BATCH,WAIT_S[,REPLICAS]", help="serve on Ray Serve with this hand setting"
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.plan:
        from graphserve.plan import Plan

        with open(args.plan, encoding="utf-8") as f:
            plan = Plan.from_json(f.read())
        gs.serve(plan, host="127.0.0.1", port=args.port, on_ready=lambda s: print(f"PORT {s.port}", flush=True))
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from .rayserve_apps import _free_port

    batch, wait, *replicas = args.rayserve.split(",")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        port = args.port or _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = rayserve_app(int(batch), float(wait), int(replicas[0]) if replicas else 1)
        serve.run(app, name="w6", route_prefix="/w6")
        print(f"PORT {port}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
