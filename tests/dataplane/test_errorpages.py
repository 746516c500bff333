"""Error pages (dataplane.errorpages): checks, splitting at apply time, escaping, the
JSON choice, and the pages on the wire of an in-process proxy (real loopback sockets)."""
import json

import pytest

from dataplane import errorpages, errors, policies, schema
from tests.dataplane.helpers import Backend, Proxy, get, pool, route, snapshot


def render(answers, code, accept=None, rid=b"rid-1", template=None, head=False):
    hdrs = [(b"accept", b"Accept", accept)] if accept is not None else []
    raw = errorpages.render(answers, code, template, rid, False, False, head, hdrs)
    head_b, _, body = raw.partition(b"\r\n\r\n")
    lines = head_b.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(b": ")
        fields[k.decode().lower()] = v.decode()
    return lines[0].decode(), fields, body


def test_check_page_names_unknown_placeholders_size_status_and_utf8():
    assert errorpages.check_page(503, "<p>{{ request_id }} {{status}} {{reason}} {{error}} {{details}}</p>") == []
    [msg] = errorpages.check_page(503, "<p>{{request_id}} {{ user }}</p>")
    assert "unknown placeholder {{user}}" in msg and "{{request_id}}" in msg
    assert "not a status with a page" in errorpages.check_page(500, "<p>x</p>")[0]
    assert "64 KiB" in errorpages.check_page(404, "x" * (64 * 1024 + 1))[0]
    assert errorpages.check_page(404, "é" * (32 * 1024)) == []  # 64 KiB of UTF-8 exactly
    assert errorpages.check_page(404, "bad \ud800 surrogate") == ["is not valid UTF-8"]
    assert errorpages.check_page(404, "  ") == ["is empty (remove the page to use the default)"]
    assert errorpages.check_page(404, 5) == ["must be a string of HTML"]
    # braces that are not a placeholder (CSS, JS) are text
    assert errorpages.check_page(404, "<style>a{color:red}</style><script>if(a){b()}</script>") == []


def test_the_snapshot_schema_refuses_a_bad_page_at_its_path():
    snap = snapshot([pool(1, [(1, "127.0.0.1", 9)])],
                    [route(1, ["a.test"], 1, error_pages={"502": "<p>{{nope}}</p>", "418": "<p>x</p>"})])
    snap["error_pages"] = {"404": "ok {{request_id}}", "503": ""}
    with pytest.raises(schema.SnapshotInvalid) as exc:
        schema.parse_snapshot(snap)
    paths = sorted(e.path for e in exc.value.errors)
    assert paths == ["error_pages.503", "routes[0].error_pages.418", "routes[0].error_pages.502"]
    snap["routes"][0]["error_pages"] = {"502": "<p>{{request_id}}</p>"}
    snap["error_pages"] = {"404": "<p>gone</p>"}
    parsed = schema.parse_snapshot(snap)
    assert parsed.routes[0].error_pages == ((502, "<p>{{request_id}}</p>"),)
    assert parsed.error_pages == ((404, "<p>gone</p>"),)


def test_a_page_is_split_around_the_request_id_and_the_rest_is_filled_escaped_at_apply_time():
    answers = errorpages.build(errorpages.compile_pages(
        {502: "<h1>{{status}} {{reason}}</h1><p>{{details}}</p><i>{{error}}</i>{{request_id}}|{{request_id}}"}))
    entry = answers.entries["connection_refused"]
    assert entry.custom and entry.html.slots == 2
    assert entry.html.chunks == (b"<h1>502 Bad Gateway</h1><p>upstream refused the connection</p>"
                                 b"<i>connection_refused</i>", b"|", b"")
    status, fields, body = render(answers, "connection_refused", rid=b"abc-123")
    assert status == "HTTP/1.1 502 Bad Gateway"
    assert body.endswith(b"<i>connection_refused</i>abc-123|abc-123")
    assert fields["content-length"] == str(len(body)) and fields["x-request-id"] == "abc-123"
    assert fields["content-type"] == "text/html; charset=utf-8"
    assert fields["proxy-status"] == 'switchyard; error=connection_refused; details="upstream refused the connection"'
    # HEAD: the same Content-Length, no body
    _, head_fields, head_body = render(answers, "connection_refused", rid=b"abc-123", head=True)
    assert head_body == b"" and head_fields["content-length"] == fields["content-length"]


def test_values_filled_into_html_are_escaped():
    gate = policies.AccessGate(1, "a<b>&\"c'", [("deny", "0.0.0.0/0")], "allow")
    platform = errorpages.build(errorpages.compile_pages({403: "<p>{{details}}</p>{{request_id}}"}))
    answers = errorpages.route_answers(platform, {}, gate)
    _, fields, body = render(answers, "access_denied", template=gate.template, rid=b"r1")
    assert body == b"<p>access list a&lt;b&gt;&amp;&quot;c&#x27;</p>r1"
    # a request id outside the safe alphabet (never one the forwarder keeps) is escaped too
    _, fields, body = render(answers, "access_denied", template=gate.template, rid=b"<x>")
    assert body.endswith(b"&lt;x&gt;") and fields["content-length"] == str(len(body))


def test_json_for_api_clients_html_for_browsers_text_for_others_without_a_page():
    answers = errorpages.DEFAULT
    _, fields, body = render(answers, "http_response_timeout", accept=b"application/json", rid=b"id9")
    assert fields["content-type"] == "application/json"
    assert json.loads(body) == {"status": 504, "error": "http_response_timeout",
                                "details": "upstream sent no response headers in time", "request_id": "id9"}
    assert fields["content-length"] == str(len(body))
    _, fields, body = render(answers, "http_response_timeout", accept=b"text/html,application/xhtml+xml,*/*;q=0.8")
    assert fields["content-type"].startswith("text/html") and b"<title>504 Gateway Timeout</title>" in body
    assert b"rid-1" in body
    _, fields, body = render(answers, "http_response_timeout", accept=b"*/*")
    assert fields["content-type"].startswith("text/plain")
    assert body == b"504 Gateway Timeout: upstream sent no response headers in time (http_response_timeout)\n"
    # a custom page answers every client but a JSON one
    custom = errorpages.build(errorpages.compile_pages({504: "<p>slow {{request_id}}</p>"}))
    assert render(custom, "http_response_timeout", accept=b"*/*")[2] == b"<p>slow rid-1</p>"
    assert render(custom, "http_response_timeout")[2] == b"<p>slow rid-1</p>"
    assert json.loads(render(custom, "http_response_timeout", accept=b"application/json")[2])["request_id"] == "rid-1"


def test_a_route_page_overrides_the_platform_one_for_its_statuses_only():
    platform = errorpages.build(errorpages.compile_pages({502: "<p>platform 502</p>", 503: "<p>platform 503</p>"}))
    own = errorpages.route_answers(platform, {503: "<p>route 503</p>"})
    assert render(own, "connection_refused")[2] == b"<p>platform 502</p>"
    assert render(own, "destination_unavailable")[2] == b"<p>route 503</p>"
    assert render(platform, "destination_unavailable")[2] == b"<p>platform 503</p>"
    assert errorpages.route_answers(platform, {}) is platform  # shared, nothing rebuilt


def test_maintenance_uses_the_503_page_and_keeps_retry_after():
    m = policies.Maintenance("r", 60)
    platform = errorpages.DEFAULT
    plain = errorpages.route_answers(platform, {}, maintenance=m)
    _, fields, body = render(plain, "maintenance", accept=b"text/html", template=m.html)
    assert b"Down for maintenance" in body  # no 503 page: the built-in maintenance page
    answers = errorpages.route_answers(platform, {503: "<p>{{details}} {{request_id}}</p>"}, maintenance=m)
    _, fields, body = render(answers, "maintenance", template=m.html, rid=b"m1")
    assert body == b"<p>maintenance m1</p>" and fields["retry-after"] == "60"
    _, fields, body = render(answers, "maintenance", accept=b"application/json", template=m.json)
    assert fields["retry-after"] == "60" and json.loads(body)["error"] == "maintenance"


def test_a_template_made_elsewhere_with_extra_headers_gets_the_page_and_keeps_them():
    t = errors.Template("rate_limited", 429, "http_request_denied", "rate limit", "Retry-After: 3\r\n")
    answers = errorpages.build(errorpages.compile_pages({429: "<p>{{details}} {{request_id}}</p>"}))
    _, fields, body = render(answers, "rate_limited", template=t, rid=b"q")
    assert body == b"<p>rate limit q</p>" and fields["retry-after"] == "3"
    assert fields["proxy-status"] == 'switchyard; error=http_request_denied; details="rate limit"'
    entry = answers.made[t]
    render(answers, "rate_limited", template=t, rid=b"q2")
    assert answers.made == {t: entry}  # made once per template, not per response


def test_preview_fills_sample_values_escaped():
    out = errorpages.preview(502, "<b>{{status}}</b> {{request_id}}")
    assert out == "<b>502</b> " + errorpages.SAMPLE_ID
    assert "access list office" in errorpages.preview(403, "{{details}}")
    assert "502 Bad Gateway" in errorpages.preview(502)


async def test_the_node_answers_with_route_and_platform_pages():
    backend = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", backend.port)]), pool(2, [(2, "127.0.0.1", 1)], retries=0)],
                    [route(1, ["down.test"], 2, error_pages={"502": "<p>route {{error}} {{request_id}}</p>"}),
                     route(2, ["other.test"], 2)])
    snap["error_pages"] = {"404": "<p>no route here ({{request_id}})</p>", "502": "<p>platform {{error}}</p>"}
    proxy = await Proxy(snap).start()
    try:
        r = await get(proxy.port, host="down.test", headers=[("X-Request-ID", "req-42")])
        assert r.status == 502 and r.body == b"<p>route connection_refused req-42</p>"
        assert r.one("x-request-id") == "req-42"
        r = await get(proxy.port, host="other.test")
        assert r.status == 502 and r.body == b"<p>platform connection_refused</p>"
        r = await get(proxy.port, host="nowhere.test", headers=[("X-Request-ID", "nr-1")])
        assert r.status == 404 and r.body == b"<p>no route here (nr-1)</p>"
        r = await get(proxy.port, host="nowhere.test", headers=[("Accept", "application/json")])
        assert json.loads(r.body)["error"] == "destination_not_found"
        assert json.loads(r.body)["request_id"] == r.one("x-request-id")
    finally:
        await proxy.close()
        await backend.close()
