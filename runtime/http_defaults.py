"""The HTTP server's defaults, one constant each.

The ingress, the server, ``gs.serve``, the process registry and the CLI all read their
defaults here, so a default is written once. Importing this module loads nothing else.
"""

from __future__ import annotations

HOST = "127.0.0.1"  # loopback: serving beyond this machine is asked for, never a default
PORT = 8000
MAX_BODY_BYTES = 16 * 1024 * 1024  # 16 MiB: a larger body is answered 413
SHUTDOWN_TIMEOUT_S = 30.0  # how long in-flight requests may finish on shutdown (then 503)
STARTUP_TIMEOUT_S = 600.0  # constructors (model loading) may take a while; never forever
HEADER_TIMEOUT_S = 10.0  # a request's line and headers must arrive within this (408 and closed)
BODY_TIMEOUT_S = 30.0  # a request's body must arrive within this (408 and closed)
KEEP_ALIVE_S = 5.0  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 64 * 1024  # request line and headers (431 above)

#: The key in an ASGI scope's ``state`` set when the server cut a body that did not arrive within
#: ``BODY_TIMEOUT_S`` (its value: the timeout); the graph route counts the request as a 408.
BODY_TIMED_OUT = "graphserve.body_timed_out_s"


def mib(size: int) -> str:
    """``size`` bytes for a help text: ``16 MiB``."""
    return f"{size / 2**20:g} MiB"
