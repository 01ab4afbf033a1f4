"""How a failed request is answered: exception -> (status, JSON body, extra headers).

The answers::

    RequestValidationError  422  {"error": ..., "detail": [pydantic's errors]}
    (malformed JSON)        400  {"error": ...}
    (body too large)        413  {"error": ...}
    (missing/bad token)     401  {"error": ...} and WWW-Authenticate: Bearer
    NodeExecutionError      500  {"error": ..., "node": ...}   (no stack trace; logged)
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
        return error_answer(500, str(exc), node=exc.node)
    status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 600 else 500
    return error_answer(status, str(exc), node=None)
