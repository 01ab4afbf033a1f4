"""The graphserve compiler: DSL graph -> IR -> diagnostics -> Plan.

It imports neither the runtime nor ray, starlette, uvicorn or torch (a test enforces it).

    ir, problems = lower(app)           # bind objects -> GraphIR (structural problems)
    diagnostics, types = validate(ir)   # every check, all at once
    warnings = check(ir, problems + diagnostics)   # raises GraphValidationError
    plan = planner.plan(ir, types, warnings, cluster)
"""

from __future__ import annotations

from typing import Any

from graphserve.dsl import App, as_app
from graphserve.plan import PLAN_VERSION, Plan

from .codes import Code
from .ir import GraphIR
from .lower import lower
from .planner import Cluster, detect_cluster, parse_cluster
from .planner import plan as make_plan
from .validate import check, validate

__all__ = [
    "PLAN_VERSION",
    "Code",
    "GraphIR",
    "Plan",
    "compile_app",
    "detect_cluster",
    "lower",
    "parse_cluster",
    "validate",
]


def compile_app(app: App | Any, cluster: Cluster | str = None) -> Plan:
    """Validate and plan an app (or a bare node). Raises GraphValidationError listing every problem."""
    app = as_app(app)
    ir, problems = lower(app)
    diagnostics, types = validate(ir)
    warnings = check(ir, problems + diagnostics)
    return make_plan(ir, types, warnings, cluster)
