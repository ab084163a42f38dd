"""A JSON HTTP server on loopback for the fake providers: a real connection, not a patched client.
Subclasses answer in _answer(method, path, query, headers, body) → (status, JSON body, headers)."""

import gzip
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Fault:
    path: str
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    after: int = 0  # requests to that path let through before this one

    def matches(self, path: str) -> bool:
        """A path, or with a trailing slash every path under it."""
        return path == self.path or (self.path.endswith("/") and path.startswith(self.path))


class LoopbackJsonServer:
    """Subclasses set default_fault(status) → the API's error body for a scripted fault."""

    name = "fake-provider"

    def __init__(self):
        self._faults: deque[Fault] = deque()
        self.sent: list[tuple[str, int]] = []  # (path, bytes of the body as sent) of every answer
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=self.name, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, dict]:
        raise NotImplementedError

    def default_fault(self, status: int) -> dict:
        raise NotImplementedError

    def shaped(self, status: int, body: dict, query: dict) -> dict:
        """The body as the API sends it for this query (a subclass may keep only the fields asked for)."""
        return body

    def compresses(self, headers) -> bool:
        """Whether this request gets its answer gzipped (Content-Encoding: gzip)."""
        return False

    def fail_next(self, path: str, status: int, body: dict | None = None, headers: dict | None = None, times: int = 1, after: int = 0) -> None:
        """The next `times` requests to path (every path under it when it ends with a slash) get
        this answer, after letting `after` of them through."""
        for _ in range(times):
            self._faults.append(Fault(path, status, body or self.default_fault(status), headers or {}, after))

    def scripted_answer(self, path: str) -> tuple[int, dict, dict] | None:
        """The scripted fault this request gets, if any (call it under the fake's own lock)."""
        fault = next((f for f in self._faults if f.matches(path)), None)
        if fault is None:
            return None
        if fault.after:
            fault.after -= 1
            return None
        self._faults.remove(fault)
        return fault.status, fault.body, fault.headers

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def _serve(self, method: str):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                status, body, headers = server._answer(method, parts.path, query, self.headers, self.rfile.read(length))
                data = b"" if body is None else json.dumps(server.shaped(status, body, query)).encode()  # None: no content (204)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                if data and server.compresses(self.headers):
                    data = gzip.compress(data, compresslevel=6)
                    self.send_header("Content-Encoding", "gzip")
                server.sent.append((parts.path, len(data)))
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

            def log_message(self, *args):
                pass

        return Handler
