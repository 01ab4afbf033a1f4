"""Serve the simulator benchmark's graphs (``bench.sim_workloads``) on the local runtime.

python -m bench.sim_server --apps chain3,batched --port 0    # prints 'PORT <n>' once serving
"""

from __future__ import annotations

import argparse
from typing import Any

from . import sim_workloads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default=",".join(sim_workloads.APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    import graphserve as gs

    def announce(server: Any) -> None:
        print(f"PORT {server.port}", flush=True)

    apps = [sim_workloads.APPS[name] for name in args.apps.split(",") if name]
    gs.serve(apps, host=args.host, port=args.port, on_ready=announce)


if __name__ == "__main__":
    main()
