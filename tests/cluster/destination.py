"""The destination host's server: the user's app that our workers forward events to.

``python -m tests.cluster.destination ADDRESS PORT LOG`` answers every POST 200 and appends one
JSON line per request to LOG (its ``webhook-id``, the event's ``conversation_id``, when), which
the rig reads from outside the namespace. Signatures are checked by the single-host tests;
here what counts is how many arrive, and how many times each.
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


def serve(address: str, port: int, log_path: str) -> None:
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115  (open for the server's life)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real app server would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            line = {
                "webhook_id": self.headers.get("webhook-id"),
                "conversation_id": orjson.loads(body).get("conversation_id"),
                "at": time.time(),
            }
            with lock:
                log.write(orjson.dumps(line) + b"\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    print(f"destination listening on {address}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
