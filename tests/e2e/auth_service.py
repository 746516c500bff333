"""A stand-in forward-auth service, run as its own process by the e2e tests.

``python tests/e2e/auth_service.py portal``: like an SSO portal's forward-auth endpoint
(Authelia's /api/authz/forward-auth, oauth2-proxy's /oauth2/auth): without the session
cookie it sets a cookie and answers 302 to its login page; with ``session=alice`` it
answers 200 with Remote-User / Remote-Groups. Every request is appended as one JSON
line (method, path, headers) to the file named by ``--log``.

``python tests/e2e/auth_service.py hang``: accepts connections and never answers.

Prints ``port=<n>`` once it listens on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOGIN = "https://login.example.test/?rd="


def portal(log_path: str) -> None:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            with lock, open(log_path, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path,
                                    "headers": [[k, v] for k, v in self.headers.items()]}) + "\n")
            cookies = "; ".join(self.headers.get_all("Cookie") or [])
            if "session=alice" in cookies:
                self.send_response(200)
                self.send_header("Remote-User", "alice")
                self.send_header("Remote-Groups", "admins,dev")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"<a href='login'>Sign in</a>\n"
            target = (self.headers.get("X-Forwarded-Proto", "") + "://" + self.headers.get("X-Forwarded-Host", "")
                      + self.headers.get("X-Forwarded-Uri", ""))
            self.send_response(302)
            self.send_header("Location", LOGIN + target)
            self.send_header("Set-Cookie", "auth_flow=started; Path=/; HttpOnly")
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port={server.server_address[1]}", flush=True)
    server.serve_forever()


def hang() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"port={sock.getsockname()[1]}", flush=True)
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)  # read nothing, answer nothing
        time.sleep(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("portal", "hang"))
    parser.add_argument("--log", default="/dev/null")
    args = parser.parse_args()
    try:
        portal(args.log) if args.mode == "portal" else hang()
    except KeyboardInterrupt:
        sys.exit(0)
