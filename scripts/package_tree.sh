#!/usr/bin/env bash
# Lay out build/package/graphserve as the package is installed (compiler/ -> graphserve/compiler,
# runtime/ -> graphserve/runtime), with symlinks. Tools that find modules on disk (mypy,
# import-linter) cannot follow pyproject's package-dir mapping, so they read this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/package
rm -rf "$tree"
mkdir -p "$tree/graphserve"
for f in graphserve/*.py graphserve/py.typed; do ln -s "$PWD/$f" "$tree/graphserve/"; done
ln -s "$PWD/compiler" "$tree/graphserve/compiler"
ln -s "$PWD/runtime" "$tree/graphserve/runtime"
echo "$tree"
