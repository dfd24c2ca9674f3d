"""A real HTTP server on 127.0.0.1 that speaks whatever a test scripts, and records what it was asked."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from carbonshift.adapters.carbon.http import HttpPolicy


@dataclass
class Reply:
    """One scripted answer: status, body (JSON-encoded unless bytes/str), headers, delay before answering."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass
class Recorded:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class ScriptedServer:
    """Routes are exact paths; each holds a queue of replies, the last one repeating."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.fallback: Reply | None = None
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                with server._lock:
                    server.requests.append(
                        Recorded(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
                    )
                    queue = server.routes.get(parts.path)
                    if queue is None:
                        reply = server.fallback or Reply({"error": f"no route {parts.path}"}, status=404)
                    else:
                        reply = queue.pop(0) if len(queue) > 1 else queue[0]
                if reply.delay_seconds:
                    time.sleep(reply.delay_seconds)
                if isinstance(reply.body, bytes):
                    payload = reply.body
                elif isinstance(reply.body, str):
                    payload = reply.body.encode()
                elif reply.body is None:
                    payload = b""
                else:
                    payload = json.dumps(reply.body).encode()
                try:
                    self.send_response_only(reply.status)
                    if "Date" not in reply.headers:
                        self.send_header("Date", self.date_time_string())
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def on(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)

    def on_any(self, reply: Reply) -> None:
        """Answer every path without a route with `reply` (a hanging or failing server)."""
        self.fallback = reply

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def count(self, path: str | None = None) -> int:
        """Requests received so far, for `path` or in all."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SleepRecorder:
    """Stands in for asyncio.sleep: records each requested wait, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


FAST_POLICY = HttpPolicy(
    timeout_seconds=0.5,
    max_attempts=3,
    backoff_initial_seconds=0.01,
    backoff_max_seconds=0.02,
    retry_after_max_seconds=5.0,
)
"""Small timeouts and delays so error-path tests stay fast."""
