"""Serve the simulator benchmark's graphs (``bench.sim_workloads``) on the local runtime.

    python -m bench.sim_server --apps chain3,batched --port 0    # prints 'PORT <n>' once serving

It is ``gs.serve``, with one addition for the benchmark: every graph response carries a
``Server-Timing: app;dur=<ms>`` header, the time from the ingress receiving the request
to it starting the response (so the benchmark can tell the server's latency from delays
of the client or the operating system).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from graphserve.runtime.ingress import Ingress

from . import sim_workloads


class TimedIngress(Ingress):
    """The ingress, adding ``Server-Timing`` to each response."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                dur = f"app;dur={(time.perf_counter() - start) * 1000:.3f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", dur)]}
            await send(message)

        await super().__call__(scope, receive, timed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default=",".join(sim_workloads.APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from graphserve.runtime.http_server import Server
    from graphserve.runtime.metrics import Metrics
    from graphserve.runtime.running_graph import GraphRuntime
    from graphserve.serving import load_plans

    def announce(server: Any) -> None:
        print(f"PORT {server.port}", flush=True)

    plans = load_plans([sim_workloads.APPS[name] for name in args.apps.split(",") if name])
    metrics = Metrics()
    ingress = TimedIngress([GraphRuntime(plan, metrics=metrics) for plan in plans], metrics=metrics)
    Server(ingress, args.host, args.port, on_ready=announce).run()


if __name__ == "__main__":
    main()
