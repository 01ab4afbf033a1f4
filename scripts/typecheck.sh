#!/usr/bin/env bash
# mypy cannot follow pyproject's package-dir mapping (compiler/ -> graphserve.compiler),
# so check a tree of symlinks laid out the way the package is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree/graphserve"
for f in graphserve/*.py graphserve/py.typed; do ln -s "$PWD/$f" "$tree/graphserve/"; done
ln -s "$PWD/compiler" "$tree/graphserve/compiler"
ln -s "$PWD/runtime" "$tree/graphserve/runtime"
exec "${PYTHON:-.venv/bin/python}" -m mypy --cache-dir build/.mypy_cache "$tree/graphserve" "$@"
