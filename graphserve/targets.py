"""Targets, as the command line and ``gs.serve`` name them: the user's app by ``module:app``,
``pkg.module:app`` or ``path/to/file.py:app`` (like uvicorn), or a plan file written by
``graphserve build``; :func:`load_plan` turns any of them (or an App, or a Plan) into a Plan.

The one plan loader of ``graphserve build``/``render``/``deploy``/``call`` and ``gs.serve``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphserve.errors import GraphError

if TYPE_CHECKING:
    from graphserve.plan import Plan

NO_CLUSTER = ("none", "off", "")
RAY_CLUSTER = "ray:"  # --cluster ray:auto, ray:HOST:PORT: read the nodes of a live Ray cluster


def load_app(target: str) -> Any:
    """The object named by ``module:attr`` or ``file.py:attr`` (attr defaults to ``app``)."""
    from graphserve.plan import imported

    module_ref, _, attr = target.partition(":")
    attr = attr or "app"
    _import_from_cwd()
    if module_ref.endswith(".py") or os.sep in module_ref:
        path = Path(module_ref).resolve()
        if not path.exists():
            raise GraphError(f"cannot load {target!r}: no file {path}")
        module_name = _module_name_for(path)
        if str(_import_root(path)) not in sys.path:
            sys.path.insert(0, str(_import_root(path)))
        module = imported(module_name, str(path))
    else:
        module = imported(module_ref, f"module {module_ref!r}")
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise GraphError(f"module {module.__name__!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _import_from_cwd() -> None:
    """Modules are found from the current directory too, as with ``python -m`` and uvicorn."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _import_root(path: Path) -> Path:
    """The first parent directory that is not a package."""
    root = path.parent
    while (root / "__init__.py").exists():
        root = root.parent
    return root


def _module_name_for(path: Path) -> str:
    root = _import_root(path)
    rel = path.with_suffix("").relative_to(root)
    return ".".join(rel.parts)


def is_plan_file(target: str) -> bool:
    return target.endswith(".json") and ":" not in target


def cluster_option(value: Any) -> Any:
    """``--cluster`` / ``serve(cluster=...)``: None, ``"none"``, ``"off"`` or ``""`` -> None (no
    check); ``"detect"``; ``"ray:auto"`` / ``"ray:HOST:PORT"`` -> the live Ray cluster's nodes (a
    ClusterPlan, read now); ``"cpus=8,gpus=2"``, ``"nodes=FILE"`` or a dict, checked here. Raises
    ValueError if malformed."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_CLUSTER):
        return None
    if isinstance(value, str) and value.strip() == "detect":
        return "detect"
    if isinstance(value, str) and value.strip().startswith(RAY_CLUSTER):  # the live Ray cluster's nodes
        from graphserve.ray_cluster import read_ray_cluster

        return read_ray_cluster(value.strip()[len(RAY_CLUSTER) :] or "auto")
    from graphserve.compiler import parse_cluster

    parse_cluster(value)  # raises ValueError for a malformed description
    return value


def load_plan(target: Any, cluster: Any = "detect") -> Plan:
    """The Plan of ``target``: a Plan, an App (or a bound node), a ``module:app`` /
    ``file.py:app`` string, or a ``plan.json`` path. Apps are validated and planned against
    ``cluster`` (see :func:`cluster_option`). Raises GraphError (GraphValidationError with
    every diagnostic for an invalid graph)."""
    from graphserve.plan import Plan

    if isinstance(target, Plan):
        return target
    if isinstance(target, (str, Path)):
        text = str(target)
        if is_plan_file(text):
            _import_from_cwd()  # its deployments are imported (by module:qualname) when it is served
            return _read_plan(text)
        target = load_app(text)
    from graphserve.compiler import compile_app

    try:
        cluster = cluster_option(cluster)
    except ValueError as exc:
        raise GraphError(
            f"bad cluster {cluster!r}: {exc} (expected 'cpus=8,gpus=1', 'nodes=FILE', 'ray:auto', 'detect' or 'none')"
        ) from exc
    plan = compile_app(target, cluster=cluster)
    if plan.slo is not None:  # gs.graph(..., slo=gs.SLO(...)): the planner chooses the tunables
        from graphserve.planning import plan_app_slo

        plan = plan_app_slo(target, plan, cluster)
    return plan


def _read_plan(path: str) -> Plan:
    from graphserve.plan import Plan

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise GraphError(f"cannot read plan {path!r}: {exc}") from exc
    try:
        return Plan.from_json(text)
    except GraphError:
        raise
    except ValueError as exc:  # not JSON, or pydantic's ValidationError: a JSON file that is not a plan
        raise GraphError(f"{path} is not a graphserve plan: {exc}") from exc
