"""How a failed request is answered: exception -> (status, JSON body, extra headers).

The answers::

    RequestValidationError  422  {"error": ..., "detail": [pydantic's errors]}
    (malformed JSON)        400  {"error": ...}
    (body too large)        413  {"error": ...}
    (missing/bad token)     401  {"error": ...} and WWW-Authenticate: Bearer
    NodeExecutionError      500  {"error", "node", "type"}: the node and the exception's type;
                                 its text and traceback go to the log (with the request id)
    OverloadedError         503  {"error": ...} and Retry-After
    DeadlineExceededError   504  {"error": ...}
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from graphserve.errors import (
    DeadlineExceededError,
    NodeExecutionError,
    OverloadedError,
    RequestError,
    RequestValidationError,
)

from .encoding import dumps

Headers = list[tuple[bytes, bytes]]


class Answer(NamedTuple):
    """What a graph route sends: a status, a body, and headers beyond the usual ones."""

    status: int
    body: bytes
    headers: Headers | None = None


_REASONS = {
    400: "bad request",
    401: "unauthorized",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    422: "invalid request",
    500: "internal server error",
    503: "overloaded",
    504: "deadline exceeded",
}


def error_body(status: int, message: str, **extra: Any) -> bytes:
    return dumps({"error": message or _REASONS.get(status, "error"), **extra})


def retry_after(seconds: float) -> Headers:
    return [(b"retry-after", str(max(1, math.ceil(seconds))).encode())]


def error_answer(status: int, message: str, headers: Headers | None = None, **extra: Any) -> Answer:
    """An error answer: ``{"error": message, **extra}`` with ``status``."""
    return Answer(status, error_body(status, message, **extra), headers)


def request_error(exc: RequestError) -> Answer:
    """The answer to a RequestError raised while executing a graph."""
    if isinstance(exc, RequestValidationError):
        return error_answer(422, str(exc), detail=exc.errors)
    if isinstance(exc, OverloadedError):
        return error_answer(503, str(exc), retry_after(exc.retry_after_s))
    if isinstance(exc, DeadlineExceededError):
        return error_answer(504, str(exc))
    if isinstance(exc, NodeExecutionError):
        return error_answer(500, error_message(exc), node=exc.node, type=exc.error_type)
    return error_answer(_status(exc), error_message(exc), node=None)


def error_message(exc: BaseException) -> str:
    """What a failed request's answer (and the live page) says of ``exc``: a graphserve error's
    own words, but for a server error (500) only the node and the exception's type: its text
    can hold paths or secrets, and goes to the log with the request id."""
    if isinstance(exc, NodeExecutionError):
        owner = f" (deployment {exc.deployment!r})" if exc.deployment else ""
        what = exc.error_type or "an error graphserve found"
        return f"node {exc.node!r}{owner} failed: {what} (the details are in the server's log)"
    if isinstance(exc, RequestValidationError | OverloadedError | DeadlineExceededError):
        return str(exc)
    if isinstance(exc, RequestError) and _status(exc) < 500:
        return str(exc)
    return f"{type(exc).__name__} (the details are in the server's log)"


def _status(exc: RequestError) -> int:
    return exc.status if isinstance(exc.status, int) and 400 <= exc.status < 600 else 500
