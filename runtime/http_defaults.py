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


def mib(size: int) -> str:
    """``size`` bytes for a help text: ``16 MiB``."""
    return f"{size / 2**20:g} MiB"
