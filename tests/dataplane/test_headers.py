"""Header rewriting (dataplane/headers.py): bytes in, bytes out, no sockets."""
from dataplane import headers
from dataplane.router import normalize_host

NONE = frozenset()
IDENT = headers.untrusted_identity(b"10.0.0.9", b"http", b"80")


def req_fields(*pairs):
    return [(name.lower(), name, value) for name, value in pairs]


def request(fields, drop=NONE, conn_tokens=None, extra=b"", identity=(), forwarded=b"",
            via=None, rid=b"rid-1", chunked=False, clen=None):
    return headers.request_head(fields, drop, conn_tokens, extra, identity, forwarded, via, rid,
                                chunked, clen)


def response(status, fields, drop=NONE, extra=b"", set_cookie=None, chunked=False,
             keep_alive=True, http10=False, reason=b"OK", rid=b"rid-1"):
    lines, cl, te, via, _ = headers.scan_response(status, reason, fields, drop)
    framing = headers.response_framing(status, cl, te, chunked)
    return headers.response_head(lines, framing, extra, set_cookie, via, rid, keep_alive, http10)


# ---- request head
def test_request_hop_by_hop_framing_and_proxy_fields_are_replaced():
    fields = req_fields((b"Host", b"app.test"), (b"Accept", b"*/*"), (b"Keep-Alive", b"300"),
                        (b"Proxy-Connection", b"keep-alive"), (b"TE", b"trailers"),
                        (b"Trailer", b"x"), (b"Upgrade", b"h2c"), (b"Connection", b"upgrade"),
                        (b"Proxy-Authorization", b"Basic eA=="), (b"Transfer-Encoding", b"chunked"),
                        (b"Content-Length", b"5"), (b"Expect", b"100-continue"),
                        (b"X-Request-ID", b"client-id"), (b"Via", b"1.0 front"),
                        (b"User-Agent", b"t/1"))
    assert request(fields, clen=b"5") == (
        b"Accept: */*\r\nUser-Agent: t/1\r\n"
        b"Via: 1.1 switchyard\r\nX-Request-ID: rid-1\r\nContent-Length: 5\r\n\r\n")


def test_request_fields_named_by_connection_and_route_drop_are_removed_extra_added():
    fields = req_fields((b"X-Secret", b"s"), (b"X-Debug", b"1"), (b"Cookie", b"a=b"),
                        (b"Accept", b"*/*"))
    out = request(fields, drop=frozenset({b"cookie"}), conn_tokens=[b"x-secret", b"close"],
                  extra=b"X-Route: r1\r\n")
    assert out == (b"X-Debug: 1\r\nAccept: */*\r\nX-Route: r1\r\n"
                   b"Via: 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")


def test_request_framing_lines():
    assert request([], chunked=True).endswith(
        b"X-Request-ID: rid-1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert request([], clen=b"0").endswith(b"X-Request-ID: rid-1\r\nContent-Length: 0\r\n\r\n")
    assert request([]).endswith(b"X-Request-ID: rid-1\r\n\r\n")


def test_request_via_appends_this_hop_and_loops_are_seen():
    assert request([], via=b"1.0 front, 1.1 edge") == (
        b"Via: 1.0 front, 1.1 edge, 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")
    assert headers.via_loops(b"1.0 front, 1.1 Switchyard")
    assert headers.via_loops(b"HTTP/1.1 switchyard (comment)")
    assert not headers.via_loops(b"1.1 switchyard-other, 1.1 edge")
    assert not headers.via_loops(b"switchyard")


def test_untrusted_client_identity_replaces_what_the_client_sent():
    fields = req_fields((b"X-Forwarded-For", b"6.6.6.6"), (b"X-Real-IP", b"6.6.6.6"),
                        (b"X-Forwarded-Host", b"evil.test"), (b"Forwarded", b"for=6.6.6.6"),
                        (b"Accept", b"*/*"))
    out = request(fields, identity=(IDENT, b"X-Forwarded-Host: ", b"app.test", b"\r\n"))
    assert out == (b"Accept: */*\r\nX-Forwarded-For: 10.0.0.9\r\nX-Real-IP: 10.0.0.9\r\n"
                   b"X-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n"
                   b"X-Forwarded-Host: app.test\r\n"
                   b"Via: 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")


def test_trusted_peer_identity_is_extended_and_its_connection_tokens_respected():
    received = {b"x-forwarded-for": b"1.2.3.4", b"x-forwarded-proto": b"https",
                b"x-real-ip": b"1.2.3.4", b"forwarded": b"for=1.2.3.4"}
    identity, previous = headers.trusted_identity(received, None, b"10.0.0.9", b"http", b"80",
                                                  b"app.test")
    assert b"".join(identity) == (b"X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Real-IP: 1.2.3.4\r\n"
                                  b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 80\r\n"
                                  b"X-Forwarded-Host: app.test\r\n")
    assert previous == b"for=1.2.3.4"
    identity, previous = headers.trusted_identity(
        received, [b"x-forwarded-for", b"forwarded"], b"10.0.0.9", b"http", b"80", b"app.test")
    assert b"".join(identity).startswith(b"X-Forwarded-For: 10.0.0.9\r\n")
    assert previous is None


def test_forwarded_element_for_this_hop():
    assert headers.forwarded_line("10.0.0.9", b"https", b"app.test", None) == (
        b'Forwarded: for=10.0.0.9;proto=https;host="app.test"\r\n')
    assert headers.forwarded_line("::1", b"http", b'a"b.test', b"for=1.2.3.4") == (
        b'Forwarded: for=1.2.3.4, for="[::1]";proto=http;host="ab.test"\r\n')
    assert headers.forwarded_line("10.0.0.9", b"http", b"", None) == (
        b"Forwarded: for=10.0.0.9;proto=http\r\n")


def test_host_routing_key_and_refused_hosts():
    assert normalize_host(b"App.Example.COM.:8080") == "app.example.com"
    assert normalize_host(b" [::1]:443 ") == "[::1]"
    for bad in (b"", b"a b", b"user@host", b"host/path", b"a,b", b"[::1", b"host:port"):
        assert normalize_host(bad) is None, bad
    assert normalize_host(b"a b") is None  # the refusal is cached, and still a refusal


# ---- response head
NGINX = [(b"Server", b"nginx"), (b"Content-Type", b"text/plain"), (b"Content-Length", b"5"),
         (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")]


def test_response_hop_by_hop_removed_length_kept_proxy_lines_added():
    assert response(200, NGINX) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\nVia: 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")


def test_response_rechunked_when_the_upstream_sent_transfer_encoding():
    fields = [(b"Transfer-Encoding", b"chunked"), (b"Trailer", b"X-T"), (b"TE", b"x"),
              (b"Upgrade", b"h2c"), (b"Proxy-Authenticate", b"Basic"),
              (b"X-Request-ID", b"upstream-id"), (b"ETag", b'"1"')]
    assert response(200, fields, chunked=True) == (
        b'HTTP/1.1 200 OK\r\nETag: "1"\r\nTransfer-Encoding: chunked\r\n'
        b"Via: 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")
    # Content-Length with Transfer-Encoding: the length is not relayed
    assert b"Content-Length" not in response(200, fields + [(b"Content-Length", b"3")],
                                             chunked=True)
    # a 204 never carries a length
    assert b"Content-Length" not in response(204, [(b"Content-Length", b"0")])


def test_response_fields_named_by_connection_are_hop_by_hop():
    fields = [(b"Connection", b"close, X-Internal"), (b"X-Internal", b"1"), (b"x-internal", b"2"),
              (b"Connection", b"X-Other, keep-alive"), (b"X-Other", b"3"), (b"X-Kept", b"4")]
    assert response(200, fields) == (
        b"HTTP/1.1 200 OK\r\nX-Kept: 4\r\nVia: 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")


def test_response_route_rules_cookie_and_connection_endings():
    fields = [(b"Server", b"nginx"), (b"X-Powered-By", b"php"), (b"Content-Length", b"0")]
    out = response(200, fields, drop=frozenset({b"x-powered-by", b"server"}),
                   extra=b"X-Frame-Options: DENY\r\n", set_cookie=b"Set-Cookie: sy=1\r\n",
                   keep_alive=False)
    assert out == (b"HTTP/1.1 200 OK\r\nX-Frame-Options: DENY\r\nSet-Cookie: sy=1\r\n"
                   b"Content-Length: 0\r\nVia: 1.1 switchyard\r\nX-Request-ID: rid-1\r\n"
                   b"Connection: close\r\n\r\n")
    assert response(200, fields, http10=True).endswith(
        b"X-Request-ID: rid-1\r\nConnection: keep-alive\r\n\r\n")
    # the same raw names under another route's rules (nothing dropped) pass
    assert b"\r\nServer: nginx\r\nX-Powered-By: php\r\n" in response(200, fields)


def test_response_via_appended_and_upstream_proxy_status_passes():
    fields = [(b"Via", b"1.1 cdn"), (b"via", b"1.0 cache"), (b"Proxy-Status", b"cdn; hit")]
    assert response(404, fields, reason=b"Not Found") == (
        b"HTTP/1.1 404 Not Found\r\nProxy-Status: cdn; hit\r\n"
        b"Via: 1.1 cdn, 1.0 cache, 1.1 switchyard\r\nX-Request-ID: rid-1\r\n\r\n")


def test_status_line_keeps_each_responses_reason():
    assert response(200, [], reason=b"OK").startswith(b"HTTP/1.1 200 OK\r\n")
    assert response(200, [], reason=b"Fine").startswith(b"HTTP/1.1 200 Fine\r\n")
    assert response(200, [], reason=b"").startswith(b"HTTP/1.1 200 \r\n")


# ---- upgrade (101) responses
WS = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade, X-Hop"), (b"X-Hop", b"1"),
      (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), (b"Via", b"1.1 app"),
      (b"Content-Length", b"0"), (b"X-Request-ID", b"up"), (b"Keep-Alive", b"1")]


def test_upgrade_response_is_relayed_with_the_same_field_rules():
    assert headers.upgrade_response(b"Switching Protocols", WS, NONE, b"rid-1") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Connection: upgrade\r\nUpgrade: websocket\r\nVia: 1.1 app, 1.1 switchyard\r\n"
        b"X-Request-ID: rid-1\r\n\r\n")
    dropped = headers.upgrade_response(b"", WS, frozenset({b"sec-websocket-accept"}), b"r")
    assert dropped.startswith(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n")


def test_upgrade_response_refused_without_websocket():
    assert headers.upgrade_response(b"OK", [(b"Connection", b"upgrade")], NONE, b"r") is None
    assert headers.upgrade_response(b"OK", [(b"Upgrade", b"h2c")], NONE, b"r") is None
    assert headers.upgrade_response(b"OK", [(b"Upgrade", b"foo, WebSocket")], NONE, b"r")


def test_one_classification_for_ordinary_and_upgrade_responses():
    ordinary, *_ = headers.scan_response(200, b"OK", WS, NONE)
    upgrade, *_ = headers.scan_response(101, b"Switching Protocols", WS, NONE)
    assert ordinary[1:] == upgrade[1:] == [b"Sec-WebSocket-Accept", b": ",
                                           b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", b"\r\n"]
