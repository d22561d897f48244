#!/usr/bin/env python3
"""Loopback helpers for scripts/tornet, in one small process.

- A DNS responder on 127.0.0.1 (UDP and TCP) for the private network's exits: `*.test`
  and `localhost` resolve to 127.0.0.1, everything else is NXDOMAIN. The exits'
  `ServerDNSResolvConfFile` names only this server, so exit-side name resolution never
  leaves loopback (tor would otherwise ask the system resolver).
- The onion service's backend: a threaded HTTP server (large backlog) that answers
  every GET with a fixed marker, so a test can tell it reached the onion service.

Usage: tornet-helper.py DNS_PORT HTTP_PORT MARKER NETWORK_DIR (the last only names the
process, so `tornet down` can tell it is its own)
"""

import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCAL_SUFFIXES = (".test", ".localhost")


def answer(query: bytes) -> bytes | None:
    """One DNS response for one query; None when the query cannot be parsed."""
    if len(query) < 12:
        return None
    ident, flags, qdcount = struct.unpack(">HHH", query[:6])
    if qdcount != 1 or flags & 0x8000:
        return None
    labels, i = [], 12
    while i < len(query):
        n = query[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(query):
            return None
        labels.append(query[i + 1 : i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if i + 4 > len(query):
        return None
    qtype, qclass = struct.unpack(">HH", query[i : i + 4])
    question = query[12 : i + 4]
    name = ".".join(labels)
    local = name == "localhost" or name.endswith(LOCAL_SUFFIXES)
    rd = flags & 0x0100
    if not local:
        # NXDOMAIN: names outside the test zone do not exist on this network.
        return struct.pack(">HHHHHH", ident, 0x8180 | rd | 3, 1, 0, 0, 0) + question
    if qtype == 1 and qclass == 1:
        rr = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        return struct.pack(">HHHHHH", ident, 0x8580 | rd, 1, 1, 0, 0) + question + rr
    # Other types for a local name: NOERROR, no answer.
    return struct.pack(">HHHHHH", ident, 0x8580 | rd, 1, 0, 0, 0) + question


class DnsUdp(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        reply = answer(data)
        if reply:
            sock.sendto(reply, self.client_address)


class DnsTcp(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        head = self.request.recv(2)
        if len(head) < 2:
            return
        (n,) = struct.unpack(">H", head)
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                return
            data += chunk
        reply = answer(data)
        if reply:
            self.request.sendall(struct.pack(">H", len(reply)) + reply)


class ThreadingUdp(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True


class ThreadingTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def onion_backend(port: int, marker: str) -> ThreadingHTTPServer:
    body = f"onion ok {marker}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024
        daemon_threads = True

    return Server(("127.0.0.1", port), Handler)


def main():
    dns_port, http_port, marker = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    servers = [
        ThreadingUdp(("127.0.0.1", dns_port), DnsUdp),
        ThreadingTcp(("127.0.0.1", dns_port), DnsTcp),
        onion_backend(http_port, marker),
    ]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
