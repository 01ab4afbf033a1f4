"""Fetch the pinned Ray Serve test files and doc examples the compatibility measurement runs.

    python scripts/fetch_ray_upstream.py                       # from GitHub (needs the network)
    python scripts/fetch_ray_upstream.py --ray-checkout ~/ray  # from a clone of ray-project/ray
    python scripts/fetch_ray_upstream.py --mirror DIR          # from DIR/ray-project/ray/<commit>/<path>

Each file is checked against the sha256 pinned in tests/compat/upstream/sources.py, rewritten
at its import lines only, and written to tests/compat/upstream/files/ (not in git), with
CHANGES.txt listing every changed line. Then ``python -m bench.compat`` measures.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.compat.upstream.sources import REPO, SOURCES, Source, rewrite  # noqa: E402

FILES = ROOT / "tests" / "compat" / "upstream" / "files"


def fetch(source: Source, mirror: Path | None, checkout: Path | None) -> bytes:
    if mirror is not None:
        return (mirror / REPO / source.commit / source.path).read_bytes()
    if checkout is not None:
        spec = f"{source.commit}:{source.path}"
        return subprocess.run(["git", "-C", str(checkout), "show", spec], check=True, capture_output=True).stdout
    url = f"https://raw.githubusercontent.com/{REPO}/{source.commit}/{source.path}"
    with urllib.request.urlopen(url, timeout=30) as response:
        data: bytes = response.read()
        return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--mirror", type=Path, help="a folder laid out as <repo>/<commit>/<path>")
    where.add_argument("--ray-checkout", type=Path, help="a git clone of ray-project/ray")
    args = parser.parse_args(argv)
    FILES.mkdir(parents=True, exist_ok=True)
    report = []
    for source in SOURCES:
        data = fetch(source, args.mirror, args.ray_checkout)
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.sha256:
            print(f"{source.path}@{source.commit}: sha256 {digest}, expected {source.sha256}", file=sys.stderr)
            return 1
        text, changes = rewrite(data.decode())
        (FILES / source.local_name).write_text(text)
        report.append(f"{source.local_name} <- {REPO}/{source.path} @ {source.commit}")
        report += [f"  line {n}: {before.strip()}  ->  {after.strip()}" for n, before, after in changes]
    (FILES / "CHANGES.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
