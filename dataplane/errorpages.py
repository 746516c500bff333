"""Error pages: the bodies of the responses the proxy generates itself.

A page is HTML an operator (the platform default) or a route owner writes for one of
``STATUSES``, with placeholders (``{{request_id}}``, ``{{status}}``, ``{{reason}}``,
``{{error}}``, ``{{details}}``). ``check_page`` is the one check of a page (the
snapshot schema and the control plane both call it).

At apply time every page is split into static byte chunks around its placeholders
and, for each error the node can answer with its status, everything but the request
id is filled in (HTML-escaped): an ``Entry`` then holds the chunks around the request
id slots. Per response the forwarder only joins those chunks with the request id; the
Content-Length is the chunks' length plus the id's length times the slots.

Content negotiation: ``Accept`` asking for JSON (and not ``text/html``) gets
``{"status", "error", "details", "request_id"}``; a custom page answers every other
client; without one, a browser (``Accept`` with ``text/html``) gets the built-in
HTML page and any other client the plain-text body of ``dataplane.errors``.
"""
from __future__ import annotations

import html
import json
import re
from http import HTTPStatus
from typing import Any, Iterable

from dataplane import errors

STATUSES = (403, 404, 429, 502, 503, 504)
# a route's pages: 404 is answered when no route matches, so only the platform has one
ROUTE_STATUSES = (403, 429, 502, 503, 504)
PLACEHOLDERS = ("request_id", "status", "reason", "error", "details")
MAX_PAGE_BYTES = 64 * 1024
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
SAFE_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_SAFE_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"  # SAFE_ID's alphabet
MAX_MADE = 4096  # entries of late templates kept per page set

BUILTIN_PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>{{status}} {{reason}}</title></head>\n"
    '<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;'
    'padding:0 1rem;color:#1f2328"><h1 style="font-size:1.6rem">{{status}} {{reason}}</h1>'
    "<p>{{details}}</p>"
    '<p style="color:#59636e;font-size:.875rem">Error: {{error}}<br>'
    "Request ID: <code>{{request_id}}</code></p></body></html>\n"
)
SAMPLE_ID = "3f2a9c1e7b4d4e0f"
# the preview's sample error of each status: one the proxy answers with it
SAMPLE_ERRORS = {403: ("http_request_denied", "access list office"),
                 404: ("destination_not_found", "no route matches this request"),
                 429: ("http_request_denied", "rate limit"),
                 502: ("connection_refused", "upstream refused the connection"),
                 503: ("destination_unavailable", "no healthy upstream target"),
                 504: ("http_response_timeout", "upstream sent no response headers in time")}

HTML_TYPE = b"Content-Type: text/html; charset=utf-8\r\n"
JSON_TYPE = b"Content-Type: application/json\r\n"
_DROPPED = (b"content-type:", b"content-length:", b"x-request-id:")
TEXT, HTML, JSON = 0, 1, 2
ANY = object()  # an entry that answers whatever template its code comes with


# ---------------------------------------------------------------- checks (both planes)

def check_page(status: Any, body: Any, statuses: tuple = STATUSES) -> list[str]:
    """What is wrong with ``body`` as the page of ``status`` (empty: nothing)."""
    problems = []
    if status == 404 and statuses is ROUTE_STATUSES:
        problems.append("a route has no 404 page: 404 answers requests no route matches "
                        "(the platform default page)")
    elif isinstance(status, bool) or status not in statuses:
        problems.append(f"{status!r} is not a status with a page; use one of "
                        + ", ".join(map(str, statuses)))
    if not isinstance(body, str):
        return problems + ["must be a string of HTML"]
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        return problems + ["is not valid UTF-8"]
    if not body.strip():
        problems.append("is empty (remove the page to use the default)")
    if size > MAX_PAGE_BYTES:
        problems.append(f"is {size} bytes; a page may have at most {MAX_PAGE_BYTES} (64 KiB)")
    if "\x00" in body:
        problems.append("contains a NUL character")
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(body)} - set(PLACEHOLDERS))
    if unknown:
        problems.append("unknown placeholder " + ", ".join("{{%s}}" % u for u in unknown)
                        + "; use " + ", ".join("{{%s}}" % p for p in PLACEHOLDERS))
    return problems


def check_pages(value: Any, statuses: tuple = STATUSES) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """A page set as JSON (``{"503": "<html>…", …}``) → ({status: body}, [(key, problem)])."""
    if not isinstance(value, dict):
        return {}, [("", "must be an object of status -> HTML page")]
    pages: dict[int, str] = {}
    problems: list[tuple[str, str]] = []
    for key, body in value.items():
        status = int(key) if isinstance(key, str) and key.isdigit() and len(key) == 3 else key
        found = check_page(status, body, statuses)
        problems += [(str(key), p) for p in found]
        if not found:
            pages[status] = body
    return pages, problems


# ---------------------------------------------------------------- apply time

def split(body: str) -> list[tuple[bool, str]]:
    """The page as (is_placeholder, text or placeholder name) segments."""
    out, pos = [], 0
    for m in PLACEHOLDER.finditer(body):
        if m.start() > pos:
            out.append((False, body[pos:m.start()]))
        out.append((True, m.group(1)))
        pos = m.end()
    if pos < len(body):
        out.append((False, body[pos:]))
    return out


def reason_of(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"


def fill(segments: list[tuple[bool, str]], values: dict[str, str]) -> tuple[bytes, ...]:
    """The chunks between the request id slots, every other value filled in escaped."""
    chunks, cur = [], []
    for slot, text in segments:
        if not slot:
            cur.append(text)
        elif text == "request_id":
            chunks.append("".join(cur).encode("utf-8"))
            cur = []
        else:
            cur.append(html.escape(values.get(text, ""), quote=True))
    chunks.append("".join(cur).encode("utf-8"))
    return tuple(chunks)


class Variant:
    """One prebuilt answer: the head up to Content-Length and the body's chunks."""

    __slots__ = ("status", "head", "chunks", "slots", "escape")

    def __init__(self, status: int, head: bytes, chunks: tuple[bytes, ...], escape: Any):
        self.status = status
        self.head = head
        self.chunks = chunks
        self.slots = len(chunks) - 1
        self.escape = escape  # how an id outside SAFE_ID is written into the body

    def render(self, rid: bytes, tail: bytes, head_only: bool) -> bytes:
        if self.slots:  # an id with a byte outside SAFE_ID's alphabet is escaped
            body = (self.escape(rid) if rid.translate(None, _SAFE_BYTES) else rid).join(self.chunks)
        else:
            body = self.chunks[0]
        return b"".join((self.head, b"Content-Length: %d\r\nX-Request-ID: " % len(body), rid, tail,
                         b"" if head_only else body))


def _html_id(rid: bytes) -> bytes:
    return html.escape(rid.decode("latin-1"), quote=True).encode("utf-8")


def _json_id(rid: bytes) -> bytes:
    return json.dumps(rid.decode("latin-1"))[1:-1].encode("ascii")


class Entry:
    """The answers to one error code: HTML (a custom page or the built-in one) and JSON
    (None: the template's own body serves JSON clients too, e.g. the maintenance one)."""

    __slots__ = ("match", "html", "json", "custom")

    def __init__(self, match: Any, html_v: Variant, json_v: Variant | None, custom: bool):
        self.match = match
        self.html = html_v
        self.json = json_v
        self.custom = custom


def _headers_of(prefix: bytes) -> tuple[bytes, bytes, str, str]:
    """(status line, the other header lines to keep, error type, details) of a
    prebuilt template's head (``errors.Template`` or ``policies.Answer``)."""
    lines = prefix.split(b"\r\n")
    kept, etype, detail = [], "", ""
    for line in lines[1:]:
        low = line.lower()
        if not line or low.startswith(_DROPPED):
            continue
        if low.startswith(b"proxy-status:"):
            m = re.search(rb'error=([A-Za-z0-9_]+)(?:; details="((?:[^"\\]|\\.)*)")?', line)
            if m:
                etype = m.group(1).decode("ascii")
                detail = re.sub(r"\\(.)", r"\1", (m.group(2) or b"").decode("latin-1"))
        kept.append(line + b"\r\n")
    return lines[0] + b"\r\n", b"".join(kept), etype, detail


_SELF = object()  # build_entry's default match: the template it is built from


def build_entry(template: Any, page: list[tuple[bool, str]] | None, match: Any = _SELF,
                with_json: bool = True) -> Entry:
    """The entry of ``template`` (anything with ``status`` and ``prefix``) answered
    with ``page`` (segments; None: the built-in page)."""
    status_line, kept, etype, detail = _headers_of(template.prefix)
    status = template.status
    values = {"status": str(status), "reason": reason_of(status), "error": etype, "details": detail}
    segments = page if page is not None else BUILTIN_SEGMENTS
    html_v = Variant(status, status_line + HTML_TYPE + kept, fill(segments, values), _html_id)
    json_v = None
    if with_json:
        before = json.dumps({"status": status, "error": etype, "details": detail})[:-1]
        chunks = ((before + ', "request_id": "').encode(), b'"}\n')
        json_v = Variant(status, status_line + JSON_TYPE + kept, chunks, _json_id)
    return Entry(template if match is _SELF else match, html_v, json_v, page is not None)


BUILTIN_SEGMENTS = split(BUILTIN_PAGE)


class Answers:
    """A route's (or the platform's) error answers: code -> ``Entry``."""

    __slots__ = ("entries", "pages", "made")

    def __init__(self, entries: dict[str, Entry], pages: dict[int, list[tuple[bool, str]]]):
        self.entries = entries
        self.pages = pages  # status -> segments of the custom pages in force
        # entries of templates built after apply time (a 429's per-Retry-After template):
        # made on first use, once per template
        self.made: dict[Any, Entry] = {}

    def with_entries(self, extra: dict[str, Entry]) -> Answers:
        return Answers({**self.entries, **extra}, self.pages)


def compile_pages(pages: dict[int, str]) -> dict[int, list[tuple[bool, str]]]:
    return {status: split(body) for status, body in pages.items()}


def build(pages: dict[int, list[tuple[bool, str]]], base: Answers | None = None,
          changed: Iterable[int] = ()) -> Answers:
    """The answers to every error of ``dataplane.errors`` with ``pages`` (segments by
    status) in force. With ``base``, only the ``changed`` statuses are rebuilt."""
    entries = {}
    changed = set(changed)
    for code, t in errors.TEMPLATES.items():
        if base is not None and t.status not in changed:
            entries[code] = base.entries[code]
        else:  # the forwarder passes no template with these codes: match None
            entries[code] = build_entry(t, pages.get(t.status), match=None)
    return Answers(entries, pages)


def route_answers(platform: Answers, own: dict[int, str], gate: Any = None,
                  maintenance: Any = None) -> Answers:
    """A route's answers: its own pages over the platform's, and its access list's 403
    and maintenance 503 prebuilt with their details and headers. Routes with none of
    these share ``platform`` itself."""
    answers = platform
    if own:
        merged = {**platform.pages, **compile_pages(own)}
        answers = build(merged, platform, changed=own)
    extra = {}
    if gate is not None:
        extra["access_denied"] = build_entry(gate.template, answers.pages.get(403))
    if maintenance is not None and 503 in answers.pages:
        # the page answers browsers; JSON clients keep the maintenance JSON
        extra["maintenance"] = build_entry(maintenance.html, answers.pages[503], match=ANY,
                                           with_json=False)
    return answers.with_entries(extra) if extra else answers


DEFAULT = build({})


# ---------------------------------------------------------------- per response

def accept_kind(headers: Iterable) -> int:
    """JSON when the client's Accept asks for JSON and not text/html; HTML when it
    names text/html; TEXT otherwise."""
    for lname, _, value in headers:
        if lname == b"accept":
            v = value.lower()
            if b"text/html" in v:
                return HTML
            if b"json" in v:
                return JSON
    return TEXT


def render(answers: Answers, code: str, template: Any, rid: bytes, close: bool, http10: bool,
           head: bool, headers: Iterable) -> bytes:
    """The bytes of the generated response ``code`` (``template``: the one the caller
    built at apply time, e.g. an access list's 403)."""
    entry = answers.entries.get(code)
    if entry is None or (entry.match is not template and entry.match is not ANY):
        t = template if template is not None else errors.TEMPLATES.get(code)
        page = answers.pages.get(getattr(t, "status", 0))
        if page is None or not isinstance(t, errors.Template):
            return errors.render(code, rid, close, http10, head, template)
        entry = answers.made.get(t)
        if entry is None:  # a template built after apply time, first seen: made once
            made = answers.made
            if len(made) >= MAX_MADE:
                made.clear()
            entry = made[t] = build_entry(t, page)
    kind = accept_kind(headers)
    if kind == JSON:
        v = entry.json
    elif kind == HTML or entry.custom:
        v = entry.html
    else:
        v = None
    if v is None:
        return errors.render(code, rid, close, http10, head, template)
    tail = errors._CLOSE if close else (errors._KEEP_10 if http10 else errors._KEEP_11)
    return v.render(rid, tail, head)


def preview(status: int, body: str | None = None) -> str:
    """A page rendered with sample values (the dashboard's preview)."""
    segments = split(body) if body is not None else BUILTIN_SEGMENTS
    error, details = SAMPLE_ERRORS.get(status, SAMPLE_ERRORS[502])
    values = {"status": str(status), "reason": reason_of(status), "error": error, "details": details}
    return SAMPLE_ID.join(c.decode("utf-8") for c in fill(segments, values))
