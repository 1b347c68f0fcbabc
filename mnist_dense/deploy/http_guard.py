"""What `serve` allows a client at the HTTP level, and the access log: an ASGI middleware and uvicorn's options.

`RequestGuard` (a plain ASGI middleware, the outermost one) reads every body within its size and time limits before
the application runs, so that a body over the limit is answered 413 in a way every client reads; it adds `nosniff`
and a Content-Security-Policy to every answer and writes one access-log line per request. What comes before a
request reaches the application (the size of its head, connections) is bounded by uvicorn's documented options
(`digit_api.uvicorn_options`); what a server alone cannot do well (head and send timeouts, pipelining, per-client
limits) is nginx's, in front of `serve --public`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone

from mnist_dense.deploy.limits import LIMITS, ServiceLimits

ACCESS_LOG = logging.getLogger("mnist_dense.access")
ACCESS_LOG.propagate = False  # its own handler (stderr or a file, set by `serve`), never uvicorn's or the root's
# Answers of the API and errors: no content of any kind, no framing. The page's files set their own policy.
API_POLICY = b"default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]
LOGGED_PATH_CHARS = 200


def log_request(client: str, method: str, path: str, status: int, seconds: float, received: int, sent: int) -> None:
    """One line per request: time, client, method, path, status, duration, bytes of the body and of the answer."""
    if ACCESS_LOG.isEnabledFor(logging.INFO):
        when = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        ACCESS_LOG.info(
            f'{when} {client or "-"} "{method} {printable(path)}" {status} {1000 * seconds:.1f}ms'
            f" in={received} out={sent}"
        )


def printable(path: str) -> str:
    """A client's path as it can go into a log line: no control characters or quotes, at most 200 characters."""
    shown = "".join(c if " " < c <= "~" and c != '"' else f"\\x{ord(c):02x}" for c in path[:LOGGED_PATH_CHARS])
    return shown + ("..." if len(path) > LOGGED_PATH_CHARS else "")


def client_address(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


class RequestGuard:
    """ASGI middleware: bodies read within `max_body_bytes` and `body_timeout_s`, security headers, the access log.

    A body over the limit is read and dropped (up to `drain_bytes`) before the 413 goes out: a client that sends its
    whole body before reading (Python's urllib) would otherwise find the connection reset instead of the answer.
    A client that asked `Expect: 100-continue` gets the 413 at once and never sends the body.
    """

    def __init__(self, app, limits: ServiceLimits = LIMITS) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, answer = time.perf_counter(), {"status": 0, "sent": 0, "received": 0}

        async def send_guarded(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *SECURITY_HEADERS]
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", API_POLICY))
                message = {**message, "headers": headers}
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            body = await self.read_body(scope, receive, send_guarded, answer)
            if body is not None:
                await self.app(scope, replay(body, receive), send_guarded)
        except asyncio.CancelledError:  # the server is stopping and its grace period is over: answer, then end
            if not answer["status"]:
                await refuse(send_guarded, 503, "the server is stopping; retry in a moment", close=True)
        except Exception:
            logging.getLogger(__name__).exception("error while answering %s %s", scope["method"], scope["path"])
            if not answer["status"]:
                await refuse(send_guarded, 500, "the server failed while answering (see its log)", close=True)
        finally:
            status, seconds = answer["status"] or 499, time.perf_counter() - started  # 499: the client left first
            log_request(client_address(scope.get("client")), scope["method"], scope.get("path", ""), status, seconds,
                        answer["received"], answer["sent"])  # fmt: skip

    async def read_body(self, scope, receive, send, answer: dict) -> bytes | None:
        """The whole body, or None when the answer has been sent here (413, 408) or the client has gone."""
        headers = dict(scope["headers"])
        length = int(headers.get(b"content-length", b"-1"))
        if length < 0 and b"transfer-encoding" not in headers:
            return b""
        limits, too_large = self.limits, f"the body is over {self.limits.max_body_bytes:,} bytes"
        if length > limits.max_body_bytes and (
            headers.get(b"expect", b"").lower() == b"100-continue" or length > limits.drain_bytes
        ):
            await refuse(send, 413, f"{too_large}; {SMALLER_PICTURE}", close=True)
            return None
        deadline = asyncio.get_running_loop().time() + limits.body_timeout_s
        parts, more = [], True
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                await refuse(send, 408, f"the body did not arrive within {limits.body_timeout_s:g} s", close=True)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk, more = message.get("body", b""), message.get("more_body", False)
            answer["received"] += len(chunk)
            if answer["received"] > limits.drain_bytes:
                await refuse(send, 413, f"{too_large}; {SMALLER_PICTURE}", close=True)
                return None
            if answer["received"] <= limits.max_body_bytes:
                parts.append(chunk)
        if answer["received"] > limits.max_body_bytes:  # read to its end: the connection can serve the next request
            await refuse(send, 413, f"{too_large}; {SMALLER_PICTURE}", close=False)
            return None
        return b"".join(parts)


SMALLER_PICTURE = "send a smaller picture (a phone photo as JPEG fits; a digit needs a few KB)"


def replay(body: bytes, receive):
    """The application's `receive`: the body read already, then whatever comes next (the client's disconnect)."""
    delivered = False

    async def receive_body() -> dict:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_body


async def refuse(send, status: int, detail: str, close: bool, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
