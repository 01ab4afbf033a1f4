"""The arrows go one way: DSL -> compiler -> Plan -> runtime.

The compiler imports neither the runtime nor ray/starlette/uvicorn/torch; the runtime
never imports the DSL's builder module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_COMPILER = ("ray", "starlette", "uvicorn", "torch", "graphserve.runtime", "runtime")
FORBIDDEN_IN_RUNTIME = ("graphserve.dsl", "graphserve.api", "graphserve.lower", "graphserve.compiler.lower")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package it lives in
                continue
            found.append((node.lineno, node.module or ""))
    return found


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return out


def test_compiler_source_imports_no_runtime_or_heavy_deps() -> None:
    assert _violations("compiler", FORBIDDEN_IN_COMPILER) == []


def test_runtime_source_does_not_import_the_dsl() -> None:
    assert _violations("runtime", FORBIDDEN_IN_RUNTIME) == []


@pytest.mark.parametrize("module", ["graphserve.compiler", "graphserve"])
def test_importing_does_not_load_heavy_modules(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in ('ray', 'starlette', 'uvicorn', 'torch', 'graphserve.runtime', 'mlflow', 'graphviz') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom graphserve.runtime import executor\n")
    assert [name for _, name in _imports(bad)] == ["ray", "graphserve.runtime"]
