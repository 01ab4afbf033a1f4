#!/usr/bin/env bash
# The import contracts of pyproject.toml's [tool.importlinter], checked with import-linter on the
# package as installed (see package_tree.sh). Extra arguments go to lint-imports.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tree=$(scripts/package_tree.sh)
python=${PYTHON:-.venv/bin/python}
[[ $python == */* ]] && python=$(realpath -s "$python")
# lint-imports puts the working directory first on sys.path: run it where graphserve/ is the laid-out tree.
cd "$tree"
exec "$python" -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())" \
    "$root/pyproject.toml" --no-cache "$@"
