"""uvicorn running an :class:`Ingress`: the bound socket, the serving thread, signals, readiness.

The socket is bound before uvicorn starts, so ``port=0`` picks a free port known at
once. uvicorn runs the ingress's lifespan startup (the graphs' constructors) before it
listens; :meth:`Server.wait_ready` returns once it listens, or raises the start's error
(a :class:`DeploymentStartError` naming the deployment) instead of hanging.

On SIGTERM/SIGINT (when serving in the main thread) or :meth:`Server.shutdown`, uvicorn
stops accepting connections, lets in-flight requests finish for up to
``shutdown_timeout_s`` (then cancels them) and runs the lifespan shutdown, which stops
the graphs. Unlike plain uvicorn it does not re-raise the signal afterwards, so a server
that shut down as asked exits normally.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from graphserve.errors import DeploymentStartError, GraphError

from . import http_defaults
from .ingress import Ingress

logger = logging.getLogger("graphserve.server")


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, telling us when it listens, and not re-raising the exit signal."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None],
        shutdown_timeout_s: float,
        on_stopping: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._shutdown_timeout_s = shutdown_timeout_s
        self._on_stopping = on_stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_stopping()  # before uvicorn waits for open connections (the page's event streams)
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info(
                "received %s: no new connections; finishing in-flight requests (up to %gs)",
                signal.Signals(sig).name,
                self._shutdown_timeout_s,
            )
        super().handle_exit(sig, frame)


class Server:
    """An HTTP server for an :class:`Ingress`: ``.host``, ``.port``, ``.url``, ``.routes``,
    ``.run()`` (blocking), ``.start()`` (background thread), ``.wait_ready()``, ``.shutdown()``."""

    def __init__(
        self,
        ingress: Ingress,
        host: str = http_defaults.HOST,
        port: int = http_defaults.PORT,
        *,
        shutdown_timeout_s: float = http_defaults.SHUTDOWN_TIMEOUT_S,
        access_log: bool = False,
        on_ready: Callable[[Server], None] | None = None,
    ) -> None:
        self.ingress = ingress
        self.plans = [route.plan for route in ingress.routes]
        self.metrics = ingress.metrics
        self.shutdown_timeout_s = shutdown_timeout_s
        self._socket = _bind(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._on_ready = on_ready
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        config = uvicorn.Config(
            ingress,
            lifespan="on",
            loop="auto",
            http="auto",
            ws="none",
            log_config=None,
            access_log=access_log,
            server_header=False,
            timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout_s)),
        )
        self._uvicorn = _Uvicorn(config, self._started, shutdown_timeout_s, ingress.begin_shutdown)

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = "[::1]" if host == "::" else f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def page_url(self) -> str:
        """The live graph page."""
        return self.url + "/-/"

    @property
    def routes(self) -> dict[str, str]:
        """Graph name -> the URL to POST to."""
        return {route.name: self.url + route.path for route in self.ingress.routes}

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _started(self) -> None:
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(self)

    def run(self) -> None:
        """Serve in this thread until SIGTERM/SIGINT (or :meth:`shutdown` from another thread)."""
        try:
            self._uvicorn.run(sockets=[self._socket])
        except SystemExit:  # uvicorn exits when the lifespan startup (a constructor) failed
            if self._ready.is_set():
                raise
        finally:
            self._socket.close()
        if not self._ready.is_set():
            raise self._failure()

    def start(self, timeout: float | None = http_defaults.STARTUP_TIMEOUT_S) -> None:
        """Serve from a background thread; returns once ready (raises if the start failed)."""
        if self._thread is not None:
            raise GraphError("this server was already started")
        self._thread = threading.Thread(target=self._run_in_thread, name=f"graphserve-{self.port}", daemon=True)
        self._thread.start()
        self.wait_ready(timeout)

    def _run_in_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:
            self._thread_error = exc

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the server accepts connections; raises the start's error if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.02):
            if self._thread is not None and not self._thread.is_alive():
                raise self._failure()
            if deadline is not None and time.monotonic() > deadline:
                self.shutdown(timeout=1.0)
                raise GraphError(f"the server did not become ready within {timeout:g}s (constructors still running?)")

    def _failure(self) -> BaseException:
        exc = self.ingress.startup_error
        if isinstance(exc, GraphError):
            return exc
        if exc is not None:
            names = ", ".join(repr(p.name) for p in self.plans)
            return DeploymentStartError(f"graph {names}", f"{type(exc).__name__}: {exc}")
        if isinstance(self._thread_error, GraphError):
            return self._thread_error
        if self._thread_error is not None:
            return GraphError(f"the server at {self.url} did not start: {self._thread_error!r}")
        return GraphError(f"the server at {self.url} did not start (see the log)")

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop: no new connections, in-flight requests finish, then the graphs stop."""
        self._uvicorn.should_exit = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.shutdown_timeout_s + 30)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GraphError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
