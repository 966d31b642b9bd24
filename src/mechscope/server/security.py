"""Headers, the access token and the body cap, for every request of the web UI (pure ASGI).

- ``Content-Security-Policy``: scripts, styles and fetches from the server itself only, no inline
  script, no plugins, no framing; plus ``nosniff`` and ``no-referrer``;
- with a token, a request passes when it carries it as ``Authorization: Bearer``, as the
  ``mechscope_token`` cookie, or as ``?token=`` (which then sets the cookie, so a browser that
  opened the printed URL keeps working); anything else is 401 JSON. The comparison is constant
  time;
- a request whose ``Content-Length`` is over :data:`MAX_BODY` bytes is refused with 413 before it
  is read (the infer endpoint also stops reading a chunked body at that size).
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = ["CSP", "MAX_BODY", "SecurityMiddleware"]

MAX_BODY = 64 * 1024
COOKIE = "mechscope_token"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *HEADERS]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SecurityMiddleware:
    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        self.token = token

    def _presented(self, scope: dict[str, Any]) -> tuple[str | None, bool]:
        """The token the request carries, and whether it came in the query string."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if query:
            return query[0], True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header carries no token
            return None, False
        return (cookie[COOKIE].value if COOKIE in cookie else None), False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from_query = False
        if self.token is not None:
            given, from_query = self._presented(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await _reply(send, 401, "a valid access token is required (Authorization: Bearer, or ?token=)")  # fmt: skip
                return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await _reply(send, 413, f"the body is over {MAX_BODY} bytes")
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if from_query:
                    extra.append((b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()))  # fmt: skip
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
