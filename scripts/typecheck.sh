#!/usr/bin/env bash
# mypy on the package as installed (see package_tree.sh: compiler/ is graphserve.compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(scripts/package_tree.sh)
exec "${PYTHON:-.venv/bin/python}" -m mypy --cache-dir build/.mypy_cache "$tree/graphserve" "$@"
