"""HTTP plumbing of the predictor: cancel a request whose client went away; 503 with Retry-After.

Starlette keeps running a handler after its client disconnects, so a queued request would still
take a place in a forward pass nobody reads. :class:`CancelOnDisconnect` (a pure ASGI
middleware) watches the connection once the request body has been read and cancels the handler
when the client disconnects before the response starts; the batcher then drops the request
(its future is cancelled) before its forward pass.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from components.serve.batching import Overloaded

logger = logging.getLogger(__name__)


class CancelOnDisconnect:
    """Cancel the HTTP handler when its client disconnects before the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = asyncio.Event()
        responding = False

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done.set()
            elif message["type"] == "http.disconnect":
                body_done.set()
            return message

        async def wrapped_send(message: Message) -> None:
            nonlocal responding
            responding = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, wrapped_receive, wrapped_send))

        async def watch() -> None:
            await body_done.wait()
            message = await receive()  # after the body, the next message is the disconnect
            if message["type"] == "http.disconnect" and not responding and not handler.done():
                handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not watcher.done() or watcher.cancelled():
                raise  # cancelled from outside (shutdown), not by a disconnect
            logger.info("client disconnected: request %s cancelled", scope.get("path"))
        finally:
            watcher.cancel()


async def overloaded_handler(_: Request, exc: Overloaded) -> JSONResponse:
    """503 with Retry-After (RFC 9110 section 10.2.3) and the reason, no traceback in the log."""
    return JSONResponse(status_code=503, content={"error": str(exc)},
                        headers={"Retry-After": str(exc.retry_after_s)})  # fmt: skip


def install(app: object) -> None:
    """Add the middleware and the 503 handler to KServe's FastAPI app (before it starts)."""
    app.add_middleware(CancelOnDisconnect)
    app.add_exception_handler(Overloaded, overloaded_handler)
