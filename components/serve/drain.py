"""Graceful shutdown of the predictor: on SIGTERM, drain, then exit.

Uvicorn's own shutdown (which KServe's ModelServer runs) closes every *idle* keep-alive
connection at once. A client that has just written its next request on such a connection then
finds it closed with the request unread, and the kernel answers with a reset: requests sent
before the signal are lost. Kubernetes sends SIGTERM while clients still hold connections to
the pod, so the predictor drains instead (Kubernetes docs, "Termination of Pods"):

1. stop accepting connections (the listening sockets close; Knative's queue-proxy, or in
   RawDeployment the pod's preStop wait, has taken the pod out of the endpoints by then);
2. answer every request that arrives on an open connection, with ``Connection: close``, so the
   client closes that connection after the answer (the in-flight ones included);
3. close a connection only once it has been idle for ``idle_grace_s`` since the signal: a
   request sent before the signal has arrived by then;
4. when no connection is left, or after ``DRAIN_ENV`` seconds, let uvicorn finish (its own
   shutdown then finds nothing to cut) and stop the gRPC server, so the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from components.common.errors import ConfigurationError

logger = logging.getLogger(__name__)

DRAIN_ENV = "REVIEW_CLASSIFIER_DRAIN_SECONDS"  # the InferenceService sets it (deploy)
DEFAULT_DRAIN_S = 20.0
IDLE_GRACE_S = 1.0


def drain_seconds(environ: dict[str, str] | None = None) -> float:
    """The drain deadline from the environment (``DRAIN_ENV``), validated."""
    raw = (os.environ if environ is None else environ).get(DRAIN_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_DRAIN_S
    except ValueError as e:
        raise ConfigurationError(f"{DRAIN_ENV}={raw!r} is not a number of seconds") from e
    if value <= 0:
        raise ConfigurationError(f"{DRAIN_ENV}={raw!r} must be > 0 seconds")
    return value


class CloseWhileDraining:
    """ASGI middleware: while ``drain`` is draining, every response says ``Connection: close``."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app, self.drain = app, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if self.drain.draining and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"connection"]  # fmt: skip
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing_send)


class Drain:
    """SIGTERM handling for one uvicorn server (and KServe's gRPC server, if it runs)."""

    def __init__(self, seconds: float, idle_grace_s: float = IDLE_GRACE_S) -> None:
        self.seconds, self.idle_grace_s = seconds, idle_grace_s
        self.draining = False
        self.server: Any = None  # uvicorn.Server
        self.grpc: Any = None  # kserve GRPCServer
        self._task: asyncio.Task | None = None

    def attach(self, server: Any, grpc: Any = None) -> None:
        """Take SIGTERM from uvicorn (call from inside its serve(), e.g. an app startup hook)."""
        self.server, self.grpc = server, grpc
        loop = asyncio.get_running_loop()
        # signal.signal, as uvicorn's capture_signals does, so that it restores its predecessor
        signal.signal(signal.SIGTERM, lambda sig, frame: loop.call_soon_threadsafe(self.start))

    def start(self) -> None:
        if self.draining:
            return
        self.draining = True
        logger.warning("SIGTERM: draining (no new connections, answers say Connection: close, "
                       "at most %.0fs)", self.seconds)  # fmt: skip
        for listener in self.server.servers:
            listener.close()  # stop accepting; open connections stay
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        start = time.monotonic()
        idle_since: dict[Any, float] = {}
        while time.monotonic() - start < self.seconds:
            connections = list(self.server.server_state.connections)
            if not connections:
                break
            now = time.monotonic()
            for conn in connections:
                cycle = conn.cycle
                if cycle is not None and not cycle.response_complete:
                    cycle.keep_alive = False  # close after this answer
                    idle_since.pop(conn, None)
                elif now - idle_since.setdefault(conn, now) >= self.idle_grace_s:
                    conn.shutdown()  # idle since the signal: nothing of it is in flight
            await asyncio.sleep(0.05)
        left = len(self.server.server_state.connections)
        logger.warning("drained in %.1fs (%d connections left); exiting",
                       time.monotonic() - start, left)  # fmt: skip
        if self.grpc is not None:
            await self.grpc.stop()
        self.server.should_exit = True


def install(app: Any, model_server: Any, seconds: float) -> Drain:
    """Drain KServe's ModelServer on SIGTERM: ``app`` is its FastAPI app, before start()."""
    drain = Drain(seconds)
    app.add_middleware(CloseWhileDraining, drain=drain)

    async def on_startup() -> None:
        # KServe keeps the uvicorn server it runs on its ModelServer (kserve 0.21
        # model_server.py ModelServer.start: RESTServer._server, GRPCServer): no public handle
        rest = getattr(model_server, "_rest_server", None)
        server = getattr(rest, "_server", None)
        if server is None or not hasattr(server, "server_state"):
            raise RuntimeError("KServe's ModelServer has no uvicorn server to drain "
                               "(multi-worker mode is not supported)")  # fmt: skip
        drain.attach(server, getattr(model_server, "_grpc_server", None))

    app.router.on_startup.append(on_startup)
    return drain
