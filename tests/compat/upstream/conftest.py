"""Runs Ray Serve's own tests and doc examples (fetched into ``files/``, see README.md here)
against graphserve, and counts how many pass.

The files are collected only when ``GS_UPSTREAM=1`` (``python -m bench.compat`` and
``tests/compat/test_upstream.py`` run them in a subprocess that sets it), so a plain pytest
run does not run them twice. This conftest is fixture plumbing only:

- ``serve_instance`` (Ray's fixture) is graphserve in this process; every test's apps are shut
  down after it (``tests/compat/conftest.py``).
- a doc example (``doc_*.py``) is one test that runs the file as a script, as Ray's CI does.
- :data:`OUT_OF_SCOPE`: tests that need Ray internals, the controller or Ray actors; skipped
  and not counted. :data:`KNOWN_FAILURES`: in scope, failing for a reason graphserve
  documents; ``xfail(strict=True)``, so a fix shows up as a failure to update this list.
- the summary line ``N of M in-scope upstream tests pass (P%)``; with
  ``GS_UPSTREAM_REPORT=path`` the outcome of each test is written there as JSON.
"""

from __future__ import annotations

import json
import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import graphserve as serve

ENABLED = os.environ.get("GS_UPSTREAM") == "1"
if not ENABLED:
    collect_ignore_glob = ["files/*"]

# test id (file name under files/, "::" and Ray's test name with its parameters) -> why it is out of scope
OUT_OF_SCOPE: dict[str, str] = {
    "test_upstream_batching.py::test_batching_magic_attributes": (
        "Ray's private replica hooks (_ray_serve_max_batch_size / _ray_serve_batch_wait_timeout_s "
        "properties that Serve's controller sets from a deployment config)"
    ),
    "test_upstream_batching.py::test_batch_cancellation": (
        "passes bare coroutines to asyncio.wait(), which Python 3.11 forbids (TypeError before any "
        "batching code runs, on Ray as on graphserve); test_cancellation_after_error covers cancellation"
    ),
}

# test id -> why it fails on graphserve (each is a row of the README's migration table)
KNOWN_FAILURES: dict[str, str] = {
    "doc_handle_guide.py": (
        "ray.get() on a handle's response: a graphserve response is not an ObjectRef (use .result() or await)"
    ),
    "doc_arithmetic.py": (
        "its last section calls ray.get() on handle.predict.remote(5): a graphserve response is not "
        "an ObjectRef (the sections before it, DAGDriver over HTTP with and without json_request, pass)"
    ),
    "doc_linear_pipeline.py": (
        "ray.get() on handle.predict.remote(1) (with .result() the graph runs and answers 4, where the "
        "example asserts 3: (1 + 0) + 1 + 2 is 4, so that assert fails on any server)"
    ),
    "doc_conditional.py": ("ray.get() on handle.predict.remote(...) (with .result() the example's asserts hold)"),
    "doc_branching_input.py": (
        "ray.get() on handle.predict.remote(1), and ray.get() inside a deployment on a list of two "
        "model outputs, which Ray 2.0-2.6 passed as ObjectRefs and graphserve passes as values"
    ),
    "doc_response_by_reference_example.py": (
        "a DeploymentResponse nested in a list reaches the callee resolved to its value, "
        "where Ray passes an ObjectRef the callee awaits"
    ),
}


class DocExample(pytest.Item):
    """A Ray documentation example, run as a script (its asserts are the test)."""

    def runtest(self) -> None:
        try:
            runpy.run_path(str(self.path), run_name="__main__")
        finally:  # as the autouse fixture does for test functions (a plain Item has no fixtures)
            serve.shutdown()

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


class DocFile(pytest.File):
    def collect(self) -> Iterator[DocExample]:
        yield DocExample.from_parent(self, name=self.path.name)


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> DocFile | None:
    if ENABLED and file_path.parent.name == "files" and file_path.name.startswith("doc_") and file_path.suffix == ".py":
        result: DocFile = DocFile.from_parent(parent, path=file_path)
        return result
    return None


def _test_id(nodeid: str) -> str:
    """``file::test[params]`` below ``files/``; a doc example is its file name."""
    test_id = nodeid.split("/files/", 1)[-1]
    name, _, rest = test_id.partition("::")
    return name if rest == name else test_id


def _listed(test_id: str, table: dict[str, str]) -> str | None:
    """The reason for ``test_id`` in ``table``: listed as is, or without its parameters."""
    return table.get(test_id) or table.get(test_id.split("[", 1)[0])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        test_id = _test_id(item.nodeid)
        out = _listed(test_id, OUT_OF_SCOPE)
        if out is not None:
            item.add_marker(pytest.mark.skip(reason=f"out of scope: {out}"))
        known = _listed(test_id, KNOWN_FAILURES)
        if known is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=known))


@pytest.fixture
def serve_instance() -> Iterator[Any]:
    """Ray's fixture: a running Serve instance. graphserve serves from this process."""
    yield serve
    serve.shutdown()


_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    test_id = _test_id(report.nodeid)
    if report.when == "call" or report.outcome != "passed":
        if report.skipped and hasattr(report, "wasxfail"):
            outcome = "xfailed"
        elif report.skipped:
            outcome = "out of scope"
        elif report.failed and hasattr(report, "wasxfail"):
            outcome = "xpassed (strict)"
        else:
            outcome = report.outcome
        if _OUTCOMES.get(test_id) in (None, "passed"):
            _OUTCOMES[test_id] = outcome


def summary(outcomes: dict[str, str]) -> dict[str, Any]:
    """The counts: in-scope tests, how many pass, the share."""
    in_scope = {k: v for k, v in outcomes.items() if v != "out of scope"}
    passed = sum(v == "passed" for v in in_scope.values())
    return {
        "in_scope": len(in_scope),
        "passed": passed,
        "percent": round(100 * passed / len(in_scope), 1) if in_scope else 0.0,
        "out_of_scope": len(outcomes) - len(in_scope),
    }


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ENABLED or not _OUTCOMES:
        return
    counts = summary(_OUTCOMES)
    terminalreporter.write_line(
        f"{counts['passed']} of {counts['in_scope']} in-scope upstream tests pass ({counts['percent']}%)"
    )
    path = os.environ.get("GS_UPSTREAM_REPORT")
    if path:
        report = {
            **counts,
            "outcomes": dict(sorted(_OUTCOMES.items())),
            "known_failures": KNOWN_FAILURES,
            "out_of_scope_reasons": OUT_OF_SCOPE,
        }
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
