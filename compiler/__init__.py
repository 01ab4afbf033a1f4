"""The graphserve compiler: DSL graph -> IR -> diagnostics -> Plan.

It imports neither the runtime nor ray, starlette, uvicorn or torch (the import-linter
contracts in pyproject.toml enforce it).

    ir, problems = lower(app)           # bind objects -> GraphIR (structural problems)
    diagnostics, types = validate(ir)   # every check, all at once
    warnings = check(ir, problems + diagnostics)   # raises GraphValidationError
    plan = planner.plan(ir, types, warnings, cluster)

Names are imported when first used (PEP 562 ``__getattr__``): ``graphserve.compiler.render``
or ``Code`` do not load the passes that ``compile_app`` needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphserve.lazy_exports import lazy_dir, lazy_getattr

if TYPE_CHECKING:
    from graphserve.plan import PLAN_VERSION, Plan

    from .codes import Code
    from .ir import GraphIR
    from .planner import Cluster, detect_cluster, parse_cluster

__all__ = [
    "PLAN_VERSION",
    "Cluster",
    "Code",
    "GraphIR",
    "Plan",
    "compile_app",
    "detect_cluster",
    "parse_cluster",
]

# public name -> the module that defines it
_EXPORTS = {
    "PLAN_VERSION": "graphserve.plan",
    "Plan": "graphserve.plan",
    "Code": "graphserve.compiler.codes",
    "GraphIR": "graphserve.compiler.ir",
    "Cluster": "graphserve.compiler.planner",
    "detect_cluster": "graphserve.compiler.planner",
    "parse_cluster": "graphserve.compiler.planner",
}


def compile_app(app: Any, cluster: Cluster | str | None = None) -> Plan:
    """Validate and plan an app (or a bare node). Raises GraphValidationError listing every problem."""
    from graphserve.dsl import as_app

    from .lower import lower
    from .planner import plan
    from .validate import check, validate

    ir, problems = lower(as_app(app))
    diagnostics, types = validate(ir)
    warnings = check(ir, problems + diagnostics)
    return plan(ir, types, warnings, cluster)


if not TYPE_CHECKING:  # mypy sees the imports above; a typo stays an error
    __getattr__ = lazy_getattr(__name__, _EXPORTS, globals())

__dir__ = lazy_dir(globals(), __all__)
