"""Where the traced processes of ``tavus-callbacks bench --tracing`` export their spans: an
OTLP/HTTP endpoint of its own process that takes ``POST /v1/traces``, counts the spans of each
``ExportTraceServiceRequest`` and answers 200, as a collector would (its cost is the
collector's, not ours: a process apart). ``GET /spans`` says how many came.

    python -m bench.otlp_sink PORT
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_ANSWER = ExportTraceServiceResponse().SerializeToString()


class Sink(BaseHTTPRequestHandler):
    spans = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(
            len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans
        )
        with Sink.lock:
            Sink.spans += count
        self._answer(_ANSWER, "application/x-protobuf")

    def do_GET(self) -> None:
        self._answer(str(Sink.spans).encode(), "text/plain")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def main(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    server.daemon_threads = True
    print(f"OTLP sink listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
