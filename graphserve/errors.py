"""The exception tree of graphserve, and the diagnostics that validation errors carry.

Every error a user can meet is one of these::

    GraphError                       base of everything graphserve raises on purpose
    ├── GraphValidationError         the graph is wrong; .diagnostics lists *every* problem
    ├── PlanError                    a valid graph cannot be planned or serialized
    ├── DeploymentStartError         a deployment's constructor failed (.deployment)
    ├── BatchOptionError             ``@gs.batch`` got a bad option value (also a ValueError)
    ├── BatchOptionTypeError         ``@gs.batch`` got an option of the wrong type, or a
    │                                function that is not ``async def`` (also a TypeError)
    ├── BatchOutputError             a batched function broke list in, list out
    ├── ProfileError                 a graph cannot be profiled or simulated (bad requests file,
    │                                a profile of another graph, bad arrivals)
    ├── RouteConflictError           two graphs on one server want the same route (.path)
    ├── RoutePrefixError             a route_prefix that does not start with '/' (also a ValueError)
    ├── HTTPAdapterError             a DAGDriver's http_adapter is not one (also a ValueError)
    ├── DeploymentOptionError        options Ray Serve refuses at once (also a ValueError)
    ├── StreamRequiredError          a handle call without ``stream=True`` got a generator (also a TypeError)
    └── RequestError                 one request failed; the server maps each to a status
        ├── RequestValidationError   the request does not fit the input schema (HTTP 422)
        ├── RouteNotFoundError       no graph (or DAG of a DAGDriver) at the request's route (HTTP 404)
        ├── BatchItemTooLargeError   one item alone exceeds ``max_batch_size`` as measured by
        │                            ``batch_size_fn`` (HTTP 413; also a RuntimeError)
        ├── OverloadedError          queues are full (HTTP 503)
        ├── DeadlineExceededError    the request passed its deadline (HTTP 504)
        └── NodeExecutionError       a node raised (.node, .deployment; HTTP 500)

The exceptions that double as builtins (``ValueError``, ``TypeError``, ``RuntimeError``) are
the ones Ray Serve raises as those builtins, so code written against Ray Serve catches them.

User mistakes are always one of these exceptions with a message, never an ``assert``.
Compiler warnings a user should see (e.g. GS117, a Ray Serve option that is accepted but
ignored) are shown once each as :class:`GraphWarning`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where in the user's code something was declared (the ``.bind(...)`` call site)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found by validation or planning.

    ``code`` is stable (documented in the README) so tools can match on it.
    """

    code: str
    message: str
    node: str | None = None
    location: Location | None = None
    hint: str | None = None
    severity: str = "error"  # "error" | "warning"

    def format(self) -> str:
        where = f"{self.location}: " if self.location else ""
        node = f"[{self.node}] " if self.node else ""
        text = f"{where}{self.severity} {self.code}: {node}{self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["location"] = str(self.location) if self.location else None
        return data


class GraphWarning(UserWarning):
    """A compiler warning shown to the user (GS109, GS110, GS117, ...)."""


class GraphError(Exception):
    """Base class of every error graphserve raises on purpose."""


class GraphValidationError(GraphError):
    """The graph has one or more problems; all of them are in ``diagnostics``."""

    def __init__(self, diagnostics: list[Diagnostic], graph: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        self.graph = graph
        count = len(self.diagnostics)
        head = f"graph {graph!r} is invalid" if graph else "graph is invalid"
        lines = [f"{head}: {count} problem{'s' if count != 1 else ''}"]
        lines += ["  " + d.format().replace("\n", "\n  ") for d in self.diagnostics]
        super().__init__("\n".join(lines))

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.diagnostics]


class PlanError(GraphError):
    """A graph that validated cannot be planned (resources) or serialized."""


class DeploymentStartError(GraphError):
    """A deployment could not be started (its constructor raised, or it could not be imported)."""

    def __init__(self, deployment: str, message: str) -> None:
        self.deployment = deployment
        super().__init__(f"deployment {deployment!r} failed to start: {message}")


class BatchOptionError(GraphError, ValueError):
    """``@gs.batch`` got an option value it cannot use (``max_batch_size=0``, a negative wait)."""


class BatchOptionTypeError(GraphError, TypeError):
    """``@gs.batch`` got an option of the wrong type, or decorates a function that is not ``async def``."""


class StreamRequiredError(GraphError, TypeError):
    """A handle call without ``options(stream=True)`` reached a generator method (Ray Serve raises a
    ``TypeError`` too): the caller would otherwise get the generator object instead of its items."""


class BatchOutputError(GraphError):
    """A batched function broke the list-in, list-out contract (one result per input)."""


class ProfileError(GraphError):
    """A graph cannot be profiled, or a profile cannot be read or used for this plan."""


class RouteConflictError(GraphError):
    """Two graphs on one server want the same HTTP route (or a graph wants a reserved one)."""

    def __init__(self, message: str, path: str) -> None:
        self.path = path
        super().__init__(message)


class RoutePrefixError(GraphError, ValueError):
    """A ``route_prefix`` that is not a path starting with '/'."""


class DeploymentOptionError(GraphError, ValueError):
    """``@serve.deployment`` or ``.options`` got options that Ray Serve refuses at once."""


class HTTPAdapterError(GraphError, ValueError):
    """A DAGDriver's ``http_adapter`` is not callable, or a parameter of it is not annotated."""


class RequestError(GraphError):
    """One request failed. ``status`` is the HTTP status the ingress answers with."""

    status = 500


class RequestValidationError(RequestError):
    """The request does not match the graph's input schema."""

    status = 422

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message)


class RouteNotFoundError(RequestError):
    """No graph (or no DAG of a DAGDriver) answers the request's route."""

    status = 404


class BatchItemTooLargeError(RequestError, RuntimeError):
    """One request's item alone is larger than ``max_batch_size`` as ``batch_size_fn`` measures it."""

    status = 413


class OverloadedError(RequestError):
    """Queues are full; the caller should retry later."""

    status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class DeadlineExceededError(RequestError):
    """The request passed its deadline; its remaining work was cancelled."""

    status = 504


class NodeExecutionError(RequestError):
    """A node of the graph raised; the original exception is ``__cause__``.

    ``error_type`` names the exception's type (``"ValueError"``), or is None for a
    failure graphserve itself found (a switch value no branch matches). Over HTTP only
    the node and the type are sent: an exception's text can hold paths and secrets, so
    it goes to the server's log, with the request id.
    """

    status = 500

    def __init__(self, node: str, deployment: str | None, message: str, error_type: str | None = None) -> None:
        self.node = node
        self.deployment = deployment
        self.error_type = error_type
        self.message = message
        owner = f" (deployment {deployment!r})" if deployment else ""
        super().__init__(f"node {node!r}{owner} failed: {message}")

    @classmethod
    def wrapping(cls, node: str, deployment: str | None, cause: BaseException, message: str | None = None) -> Any:
        """The error for ``cause`` raised in ``node``, an instance of ``cause``'s type too (as Ray Serve's
        errors are), so ``except ZeroDivisionError`` still catches a deployment's ZeroDivisionError."""
        kind: Any = _typed(type(cause))
        error = kind.__new__(kind)
        NodeExecutionError.__init__(
            error, node, deployment, message or f"{type(cause).__name__}: {cause}", type(cause).__name__
        )
        error.__cause__ = cause
        return error

    def __reduce__(self) -> Any:
        message = getattr(self, "message", str(self))
        return (NodeExecutionError, (self.node, self.deployment, message, getattr(self, "error_type", None)))


_TYPED: dict[type, type] = {}


def _typed(kind: type) -> type:
    """``NodeExecutionError`` made an instance of ``kind`` too (when Python allows the pair)."""
    if not issubclass(kind, Exception) or issubclass(kind, GraphError):
        return NodeExecutionError
    typed = _TYPED.get(kind)
    if typed is None:
        try:
            typed = type(
                f"NodeExecutionError[{kind.__name__}]", (NodeExecutionError, kind), {"__str__": Exception.__str__}
            )
        except TypeError:  # layouts that cannot be combined (e.g. OSError's)
            typed = NodeExecutionError
        _TYPED[kind] = typed
    return typed
