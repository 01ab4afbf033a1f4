"""Ray Serve's own tests and doc examples on graphserve: how many in-scope ones pass.

    python scripts/fetch_ray_upstream.py [--ray-checkout DIR | --mirror DIR]   # once
    python -m bench.compat      # run them, print "N of M ...", write bench/results/compat.json
    python -m bench.readme      # the README's "Ray Serve's own tests" section from that file

The files are the ones pinned in ``tests/compat/upstream/sources.py``, with only their
import lines rewritten; ``tests/compat/upstream/conftest.py`` lists the tests out of scope
and the known failures, each with its reason. The run is one pytest process over
``tests/compat/upstream/files/`` with the HTTP server on 127.0.0.1:8000, where Ray's
examples send their requests, and without Ray's automatic ``ray.init()``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "tests" / "compat" / "upstream" / "files"
RESULTS = ROOT / "bench" / "results" / "compat.json"


class NotFetched(Exception):
    """The upstream files are not in tests/compat/upstream/files/ (run the fetch script)."""


def fetched() -> bool:
    from tests.compat.upstream.sources import SOURCES

    return all((FILES / s.local_name).is_file() for s in SOURCES)


def measure(timeout_s: float = 300) -> dict[str, Any]:
    """Run the upstream files in a pytest subprocess; the counts and each test's outcome."""
    from tests.compat.upstream.sources import REPO, SOURCES

    if not fetched():
        raise NotFetched(f"fetch them first: python scripts/fetch_ray_upstream.py (into {FILES})")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "GS_UPSTREAM": "1",
            "GS_UPSTREAM_REPORT": str(report),
            "GRAPHSERVE_HTTP_PORT": "8000",  # Ray's examples call http://localhost:8000
            "RAY_ENABLE_AUTO_CONNECT": "0",  # ray.get() must not start a Ray cluster
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(FILES)]
        started = time.monotonic()
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        elapsed = time.monotonic() - started
        if not report.is_file():
            raise RuntimeError(f"the upstream run wrote no report (exit {run.returncode}):\n{run.stdout[-4000:]}")
        results: dict[str, Any] = json.loads(report.read_text())
    results["exit_code"] = run.returncode
    results["duration_s"] = round(elapsed, 1)
    results["summary_line"] = next(
        (line for line in run.stdout.splitlines() if "in-scope upstream tests pass" in line), ""
    )
    results["sources"] = [
        {"repo": REPO, "path": s.path, "commit": s.commit, "sha256": s.sha256, "kind": s.kind, "file": s.local_name}
        for s in SOURCES
    ]
    results["output_tail"] = run.stdout[-2000:] if run.returncode != 0 else ""
    return results


def main() -> int:
    sys.path.insert(0, str(ROOT))
    try:
        results = measure()
    except NotFetched as exc:
        print(exc, file=sys.stderr)
        return 1
    results["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(results["summary_line"])
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0 if results["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
