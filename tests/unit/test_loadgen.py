"""perf/loadgen.py, the benchmarks' load generator, against a small keep-alive
HTTP/1.1 server that counts the connections it is given."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from perf.loadgen import build_request, run_load


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self) -> None:
        super().setup()
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.connections += 1  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(202)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.connections, httpd.lock = 0, threading.Lock()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _requests(port: int, count: int) -> list[bytes]:
    return [build_request("127.0.0.1", port, "/x", {}, b"{}") for _ in range(count)]


@pytest.mark.parametrize(("per_connection", "connections"), [(None, 2), (5, 6)])
def test_connections_are_kept_or_renewed_after_so_many_requests(
    server, per_connection, connections
):
    port = server.server_address[1]
    result = run_load(
        "127.0.0.1",
        port,
        _requests(port, 30),
        connections=2,
        duration=10,
        requests_per_connection=per_connection,
    )
    assert result.statuses == {202: 30}
    assert not result.errors
    assert server.connections == connections  # 30 requests, 5 a connection: 6
