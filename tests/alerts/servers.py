"""Real receivers for alert tests: an SMTP server (aiosmtpd) and an HTTP server
(http.server), each in a thread on a free loopback port, plus eager Celery.

Import the fixtures into a test module or conftest:
    from tests.alerts.servers import eager_celery, smtp_server, webhook_server  # noqa: F401
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import free_port

WEBHOOK_SECRET = "s3cret-for-hmac"


# ------------------------------------------------------------------ SMTP

class _Sink:
    def __init__(self):
        self.messages = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                  "subject": str(message["Subject"]),
                                  "body": message.get_body(("plain",)).get_content()})
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server; Django's SMTP backend points at it. ``.messages`` lists what
    arrived (from, to, subject, body)."""
    from aiosmtpd.controller import Controller

    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    sink.port = controller.port
    try:
        yield sink
    finally:
        controller.stop()


# ------------------------------------------------------------------ HTTP

@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    signature_valid: bool

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class WebhookServer:
    port: int = 0
    secret: str = WEBHOOK_SECRET
    # Status codes to answer, in order; when empty, 200. A tuple (status, headers) also works.
    statuses: list = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(server_state: WebhookServer):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            expected = "sha256=" + hmac.new(server_state.secret.encode(), body, hashlib.sha256).hexdigest()
            signature = self.headers.get("X-Switchyard-Signature", "")
            server_state.requests.append(Received(self.path, dict(self.headers.items()), body,
                                                  hmac.compare_digest(expected, signature)))
            answer = server_state.statuses.pop(0) if server_state.statuses else 200
            status, headers = answer if isinstance(answer, tuple) else (answer, {})
            payload = b"ok" if status < 400 else b"receiver exploded"
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST  # a followed redirect would arrive as GET

        def log_message(self, *args):
            pass

    return Handler


def _serve():
    state = WebhookServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state, httpd


@pytest.fixture
def webhook_server():
    """A real HTTP receiver on loopback that checks the HMAC signature of every body."""
    state, httpd = _serve()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def second_webhook_server():
    state, httpd = _serve()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------ Celery

@pytest.fixture
def eager_celery():
    """Run Celery tasks inline (delay/apply_async execute at once, countdown ignored)."""
    from controlplane.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    try:
        yield app
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


class RetryQueue:
    def __init__(self):
        self.pending = []      # (alert_id, channel_id, attempt, countdown)
        self.countdowns = []   # of the retries run so far

    def run_next(self):
        from controlplane.alerts import tasks
        alert_id, channel_id, attempt, countdown = self.pending.pop(0)
        self.countdowns.append(countdown)
        return tasks.deliver.apply(args=(alert_id, channel_id, attempt)).get()

    def run_all(self):
        while self.pending:
            self.run_next()


@pytest.fixture
def retry_queue(monkeypatch):
    """Captures delivery retries instead of scheduling them (a broker with a fake clock):
    the test runs them when it likes and sees each retry's countdown."""
    from controlplane.alerts import tasks

    queue = RetryQueue()
    monkeypatch.setattr(tasks, "schedule_retry",
                        lambda alert_id, channel_id, attempt, countdown:
                        queue.pending.append((alert_id, channel_id, attempt, countdown)))
    return queue
