"""The HTTP API's last line of defence: an exception no handler expected becomes a one-line JSON answer.

:class:`UnhandledErrors` is a plain ASGI middleware around the routes. An exception that escapes a handler
is answered ``500 {"detail": "internal error in POST /api/v1/...: ValueError: ..."}`` (if the answer has
not started yet), logged as one line (the traceback only at DEBUG), counted in
``ems_central_http_unhandled_errors_total{route, exception}``, and never re-raised, so uvicorn does not
print a traceback either. A client that went away mid-request (``ClientDisconnect``) is not an error: it
is logged at DEBUG and counted nowhere.

Starlette's own ``ServerErrorMiddleware`` answers 500 too, but re-raises the exception afterwards, which
makes the server log the whole traceback at ERROR.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from central.service.planner import reason

log = logging.getLogger(__name__)


class UnhandledErrors:
    """ASGI middleware; ``count(route, exception_name)`` is called for every unhandled exception."""

    def __init__(self, app: ASGIApp, count: Callable[[str, str], None]) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            log.debug("%s %s: the client went away mid-request", scope["method"], scope["path"])
        except Exception as exc:
            route = _route(scope)
            where = f"{scope['method']} {route}"
            log.debug("unhandled exception in %s", where, exc_info=True)
            log.error("internal error in %s: %s", where, reason(exc))
            self.count(route, type(exc).__name__)
            if not started:
                await _answer_500(send, f"internal error in {where}: {reason(exc)}")


def _route(scope: Scope) -> str:
    """The route's path template (bounded label values), else the raw path."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path
    return str(scope.get("path", ""))


async def _answer_500(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
