"""The arrows go one way, checked twice.

1. The import graph: import-linter's contracts (``[tool.importlinter]`` in pyproject.toml)
   on every import the source has, at module level, inside functions and under
   TYPE_CHECKING: the layers (cli > serving/compat > api > registry/targets >
   compiler/batching > runtime/dsl > resources > plan > errors/lazy_exports), the compiler importing
   neither the runtime nor ray/starlette/uvicorn/torch, a Ray actor loading no HTTP server. A
   contract that is broken on purpose must fail.
2. What really loads: each entry point imported in a fresh interpreter, and the modules
   that must stay out of ``sys.modules`` (package ``__init__`` files run on import and
   are lazy, so a chain the import graph cannot see would show here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
]

# What the runtime must never load: the DSL and the entry points above it, the compiler, its libraries.
NOT_IN_RUNTIME = (
    "graphserve.dsl",
    "graphserve.batching",
    "graphserve.api",
    "graphserve.registry",
    "graphserve.compat",
    "graphserve.serving",
    "graphserve.cli",
    "graphserve.targets",
    "graphserve.compiler",
    "rich",
    "opentelemetry",  # optional, imported only where the process already uses it (runtime/otel.py)
)
NOT_IN_ACTOR = (*NOT_IN_RUNTIME, "starlette", "uvicorn", "graphserve.runtime.ingress", "graphserve.runtime.http_server")
NOT_IN_COMPILER = ("graphserve.runtime", "ray", "starlette", "uvicorn", "torch", "mlflow", "graphviz")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on ``tree`` (a folder holding the package as installed, graphserve/compiler included)."""
    return subprocess.run(
        [*LINT, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=120
    )


def _installed_copy(tmp_path: Path) -> Path:
    """A copy of the package laid out as installed: compiler/ -> graphserve/compiler, runtime/ -> graphserve/runtime."""
    package = tmp_path / "graphserve"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "graphserve", package, ignore=ignore)
    shutil.copytree(ROOT / "compiler", package / "compiler", ignore=ignore)
    shutil.copytree(ROOT / "runtime", package / "runtime", ignore=ignore)
    return tmp_path


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    done = _lint(_installed_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("path", "source", "broken"),
    [
        # a lazy import inside a function, in the compiler
        ("compiler/sneaky.py", "def f():\n    from graphserve.runtime import executor\n", "compiler imports neither"),
        # a type-only import of the DSL, in the runtime
        (
            "runtime/sneaky.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from graphserve.dsl import App\n",
            "cli > serving/compat > api > registry/targets > compiler/batching > runtime/dsl",
        ),
        # an actor that reaches the HTTP server through another runtime module
        ("runtime/replica.py", "+import graphserve.runtime.http_server\n", "a Ray actor loads no HTTP server"),
        # a new module no layer names
        ("newcomer.py", "X = 1\n", "graphserve.newcomer"),
    ],
)
def test_a_broken_contract_fails(tmp_path: Path, path: str, source: str, broken: str) -> None:
    target = _installed_copy(tmp_path) / "graphserve" / path  # path inside the installed package
    if source.startswith("+"):
        target.write_text(target.read_text() + source[1:])
    else:
        target.write_text(source)
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert broken in done.stdout + done.stderr


def _loaded_after(statement: str) -> set[str]:
    """The modules in sys.modules after ``statement`` runs in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _present(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize(
    "module",
    [
        "graphserve.runtime",
        "graphserve.runtime.executor",
        "graphserve.runtime.running_graph",
        "graphserve.runtime.local",
        "graphserve.runtime.ingress",
        "graphserve.runtime.http_server",
    ],
)
def test_the_runtime_loads_no_dsl_and_no_compiler(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert module in loaded
    assert _present(loaded, NOT_IN_RUNTIME) == []


def test_a_ray_actor_loads_no_dsl_compiler_or_http_server() -> None:
    pytest.importorskip("ray")
    loaded = _loaded_after("import graphserve.runtime.ray_actor")
    assert "ray" in loaded
    assert _present(loaded, NOT_IN_ACTOR) == []


def test_importing_graphserve_loads_nothing_more() -> None:
    loaded = _loaded_after("import graphserve, graphserve.compiler, graphserve.runtime")
    assert _present(loaded, ("graphserve",)) == [
        "graphserve",
        "graphserve.compiler",
        "graphserve.lazy_exports",  # the packages' shared PEP 562 __getattr__
        "graphserve.runtime",
    ]
    assert _present(loaded, ("pydantic", "asyncio", "starlette")) == []


def test_compiling_loads_no_runtime_or_heavy_library() -> None:
    loaded = _loaded_after(
        "from graphserve.compiler import compile_app\n"
        "from tests.graphs import branching\n"
        "compile_app(branching.app).to_json()\n"
    )
    assert "graphserve.compiler.planner" in loaded
    assert _present(loaded, NOT_IN_COMPILER) == []
