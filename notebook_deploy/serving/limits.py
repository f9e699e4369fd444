"""ASGI middleware that refuses request bodies over a size limit with a JSON 413.

A body declared too large (``Content-Length``) is refused before a byte of it is read: the app never calls
``receive``, so the server sends no ``100 Continue`` and reads nothing, and ``Connection: close`` ends the
connection instead of draining what the client may still send. A chunked body is counted as it arrives
and refused once it passes the limit; what the client already sent is read on (up to a bound), so that it
sees the answer rather than a reset connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# A refused chunked body is still read and thrown away up to this many bytes, so that a client which sends
# the whole body before reading the answer sees the 413 instead of a reset connection.
_DRAIN_BYTES = 256 * 1024 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 to requests whose body exceeds ``max_bytes``, declared or streamed."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await self._refuse(receive, send, int(declared), body_done=False)
            else:  # the HTTP server holds the body to its declared length: nothing to count
                await self.app(scope, receive, send)
            return
        received = 0
        started = body_done = False

        async def counting_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(receive, send, None, body_done)

    async def _refuse(self, receive: Receive, send: Send, declared: int | None, body_done: bool) -> None:
        drained = 0
        # once the body is complete, receive() only waits for the client to leave; a declared body is never read
        more = not body_done and declared is None
        while more and drained < _DRAIN_BYTES:
            message = await receive()
            drained += len(message.get("body", b""))
            more = message.get("more_body", False) and message["type"] == "http.request"
        size = f"{declared} bytes" if declared is not None else "more than that"
        body = orjson.dumps(
            {"detail": f"the request body is {size}; the limit is {self.max_bytes} bytes: send fewer rows per request"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + ([(b"connection", b"close")] if declared is not None else []),
            }
        )
        await send({"type": "http.response.body", "body": body})


# Request line and headers together. httptools (uvicorn's parser here) buffers a header of any size, so
# BoundedHead counts the head's bytes itself: past this, a 431 and the connection closed.
MAX_HEADER_BYTES = 64 * 1024


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with the request's head bounded to ``MAX_HEADER_BYTES``."""

    _head_bytes = 0
    _in_head = True

    def on_message_begin(self) -> None:
        self._head_bytes, self._in_head = 0, True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                message = f"the request's headers are over {MAX_HEADER_BYTES} bytes".encode()
                self.transport.write(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: " + str(len(message)).encode() + b"\r\nconnection: close\r\n\r\n" + message
                )
                self.transport.close()
