"""graphserve serving the benchmark's workloads (several graphs on one server), on the
local runtime or the Ray backend; the same ``gs.serve`` that ``graphserve deploy`` runs.

    python -m bench.gs_server --backend local --port 8002 --workloads W1,W3
    python -m bench.gs_server --backend ray --port 8003       # Ray with num_cpus=2
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from . import workloads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002, help="0: a free port, printed as 'PORT <n>' once serving")
    parser.add_argument("--workloads", default=",".join(workloads.APPS))
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args(argv)
    apps = [getattr(workloads, workloads.APPS[w]) for w in args.workloads.split(",") if w]
    import graphserve as gs

    def announce(server: Any) -> None:
        print(f"PORT {server.port}", flush=True)

    if args.backend == "local":
        gs.serve(apps, host=args.host, port=args.port, on_ready=announce)
        return
    # A Ray of our own (not one another process started), with as many CPUs as Ray Serve gets.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        gs.serve(apps, host=args.host, port=args.port, backend="ray", on_ready=announce)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
