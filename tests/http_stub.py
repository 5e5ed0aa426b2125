"""A quiet JSON HTTP handler for the tests' stand-in endpoints (remote suspects that behave or misbehave)."""

import http.server


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """Subclasses define do_GET/do_POST and answer with ``_send``; nothing is logged."""

    def log_message(self, *a) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
