"""The physical floor of one extra hop for ``make bench``: a stdlib keep-alive pass-through HTTP proxy.

    python -m benchmarks.proxy PORT UPSTREAM_URL

A thread per client connection, one keep-alive upstream connection per thread, TCP_NODELAY both ways, no
parsing beyond HTTP framing: what any gateway must at least add to a call. Not part of the product.
"""

from __future__ import annotations

import http.client
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = urlsplit("http://127.0.0.1/")

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.outbound = http.client.HTTPConnection(
            self.upstream.hostname or "", self.upstream.port, timeout=60
        )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        if self.outbound.sock is None:
            self._connect()
        self.outbound.request("POST", self.upstream.path or "/", body=body, headers=headers)
        reply = self.outbound.getresponse()
        data = reply.read()
        self.send_response(reply.status)
        for name, value in reply.getheaders():
            if name.lower() not in HOP_BY_HOP | {"date", "server"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _connect(self) -> None:
        self.outbound.connect()
        sock: socket.socket = self.outbound.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the benchmark reads no proxy log


if __name__ == "__main__":
    Proxy.upstream = urlsplit(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy)
    server.daemon_threads = True
    server.serve_forever()
