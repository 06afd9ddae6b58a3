"""The API's refusal from below the application (ASGI middleware): the same JSON shape as
its other errors, {"detail", "field", "rule"}."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_refusal(
    send: Send, status: int, detail: str, field: str, rule: str, *, close: bool = False
) -> None:
    """Answer with `status` and the error body; `close` asks the client to drop the
    connection (the request body was not read)."""
    body = json.dumps({"detail": detail, "field": field, "rule": rule}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
