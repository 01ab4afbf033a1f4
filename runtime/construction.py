"""Constructing deployments from a Plan: its import paths back into classes and functions,
constructor arguments (with handles), and the order to build deployments in."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from graphserve.errors import DeploymentStartError, PlanError
from graphserve.plan import ConstValue, HandleRef, NodeRef, Plan, StructValue


def load_target(plan: Plan, import_path: str, deployment: str | None = None) -> Any:
    """The user's class or function behind ``import_path``.

    A module attribute decorated with ``@gs.deployment`` is a wrapper; its
    ``__wrapped__`` is the user's class or function.
    """
    try:
        obj = plan.resolve(import_path)
    except PlanError as exc:
        if deployment is None:
            raise
        raise DeploymentStartError(deployment, str(exc)) from exc
    if not (isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        obj = getattr(obj, "__wrapped__", obj)
    return obj


def build_args(
    args: list[Any],
    kwargs: dict[str, Any],
    handle: Callable[[str], Any],
) -> tuple[list[Any], dict[str, Any]]:
    """Constructor arguments with handles made by ``handle(deployment_name)``."""
    return [build_value(a, handle) for a in args], {k: build_value(v, handle) for k, v in kwargs.items()}


def build_value(arg: Any, handle: Callable[[str], Any]) -> Any:
    if isinstance(arg, ConstValue):
        return arg.value
    if isinstance(arg, HandleRef):
        return handle(arg.deployment)
    if isinstance(arg, StructValue):
        if arg.form == "dict":
            return {k: build_value(v, handle) for k, v in arg.items}
        items = [build_value(v, handle) for _, v in arg.items]
        return items if arg.form == "list" else tuple(items)
    if isinstance(arg, NodeRef):  # pragma: no cover - the compiler never puts nodes in constructors
        raise PlanError(f"node {arg.node!r} cannot be a constructor argument")
    raise PlanError(f"unknown argument {arg!r}")  # pragma: no cover


def construction_order(plan: Plan) -> list[str]:
    """Deployments with the ones they hold handles to first."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for target in plan.deployment(name).handles:
            visit(target)
        done.append(name)

    for dep in plan.deployments:
        visit(dep.name)
    return done


async def construct(target: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """An instance of ``target``; an ``async def __init__`` (which Ray Serve allows) is awaited."""
    if inspect.iscoroutinefunction(getattr(target, "__init__", None)):
        instance = target.__new__(target)
        await target.__init__(instance, *args, **kwargs)
        return instance
    return target(*args, **kwargs)
