"""The benchmark's workloads on Ray Serve: ``serve.deployment``s and handles, with
``max_ongoing_requests`` raised so Ray Serve's limits never cap the offered load, and
no CPUs reserved per replica so every graph fits a 2-CPU Ray.

- W1: one deployment (the HTTP ingress) returning its input
- W2: an ingress chaining three no-op deployments (responses passed on unawaited)
- W3: an ingress starting three 10 ms models, then a combiner taking their responses
- W4 / W4cpu: one deployment whose ``__call__`` feeds an ``@serve.batch`` method
- W5: an ingress calling the cheap model, then the expensive one for x >= 0.9

    python -m bench.rayserve_apps --port 8004 --workloads W1,W2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import threading
from typing import Any

from . import costs

MAX_ONGOING = 1000


def build_apps(workloads: list[str]) -> dict[str, Any]:
    """Workload id -> a bound Ray Serve application (imports ray.serve)."""
    from ray import serve
    from starlette.requests import Request

    options: dict[str, Any] = {"max_ongoing_requests": MAX_ONGOING, "ray_actor_options": {"num_cpus": 0}}

    def d(cls: type) -> Any:
        return serve.deployment(cls, **options)

    class Echo:
        async def __call__(self, request: Request) -> Any:
            return await request.json()

    class Noop:
        async def __call__(self, x: Any) -> Any:
            return x

    class Chain:
        def __init__(self, a: Any, b: Any, c: Any) -> None:
            self.a, self.b, self.c = a, b, c

        async def __call__(self, request: Request) -> Any:
            body = await request.json()
            return await self.c.remote(self.b.remote(self.a.remote(body)))

    class Model:
        async def __call__(self, x: float) -> float:
            await asyncio.sleep(costs.FANOUT_S)
            return x

    class Combiner:
        async def __call__(self, a: float, b: float, c: float) -> float:
            return a + b + c

    class FanOut:
        def __init__(self, m0: Any, m1: Any, m2: Any, combiner: Any) -> None:
            self.models = [m0, m1, m2]
            self.combiner = combiner

        async def __call__(self, request: Request) -> Any:
            x = (await request.json())["x"]
            return await self.combiner.remote(*(m.remote(x) for m in self.models))

    class GpuBatched:
        @serve.batch(max_batch_size=costs.MAX_BATCH_SIZE, batch_wait_timeout_s=costs.BATCH_WAIT_S)
        async def predict(self, xs: list[float]) -> list[float]:
            return await costs.gpu_batch(xs)

        async def __call__(self, request: Request) -> Any:
            return await self.predict((await request.json())["x"])

    class CpuBatched:
        @serve.batch(max_batch_size=costs.MAX_BATCH_SIZE, batch_wait_timeout_s=costs.BATCH_WAIT_S)
        async def predict(self, xs: list[float]) -> list[float]:
            return await costs.cpu_batch(xs)

        async def __call__(self, request: Request) -> Any:
            return await self.predict((await request.json())["x"])

    class Cheap:
        async def __call__(self, x: float) -> float:
            await asyncio.sleep(costs.CHEAP_S)
            return x

    class Expensive:
        async def __call__(self, x: float) -> float:
            await asyncio.sleep(costs.EXPENSIVE_S)
            return 2 * x

    class Conditional:
        def __init__(self, cheap: Any, expensive: Any) -> None:
            self.cheap, self.expensive = cheap, expensive

        async def __call__(self, request: Request) -> Any:
            score = await self.cheap.remote((await request.json())["x"])
            if score >= costs.EXPENSIVE_THRESHOLD:
                return await self.expensive.remote(score)
            return score

    makers = {
        "W1": lambda: d(Echo).bind(),
        "W2": lambda: d(Chain).bind(*(d(Noop).options(name=f"noop{i}").bind() for i in range(3))),
        "W3": lambda: d(FanOut).bind(
            *(d(Model).options(name=f"model{i}").bind() for i in range(3)), d(Combiner).bind()
        ),
        "W4": lambda: d(GpuBatched).bind(),
        "W4cpu": lambda: d(CpuBatched).bind(),
        "W5": lambda: d(Conditional).bind(d(Cheap).bind(), d(Expensive).bind()),
    }
    return {w: makers[w]() for w in workloads}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0: a free port once Ray runs (printed as 'PORT <n>')")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W4cpu,W5")
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        port = args.port or _free_port()  # chosen after Ray started its own servers
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for wid, app in build_apps([w for w in args.workloads.split(",") if w]).items():
            serve.run(app, name=wid.lower(), route_prefix=f"/{wid.lower()}")
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
