"""dataplane.wire: the one check of what a node may write to a socket (RFC 9110 tokens
and field values, RFC 6265 cookie names, host names)."""
import pytest

from dataplane import wire


@pytest.mark.parametrize("name", ["X-Env", "x_under", "Cache-Control", "!#$%&'*+-.^_`|~09az"])
def test_it_takes_rfc_9110_tokens_as_header_names(name):
    assert wire.header_name(name) == name.encode()


@pytest.mark.parametrize("name, shown", [
    ("Bad Name", "U+0020 (a space)"), ("X-A:", "':' (U+003A)"), ("X\r\nY", "U+000D (a control character)"),
    ("X\x00", "U+0000 (a control character)"), ("X-\x7f", "U+007F (a control character)"),
    ("Café", "'é' (U+00E9)"), ("(x)", "'(' (U+0028)"), ('"q"', "'\"' (U+0022)"),
])
def test_it_refuses_header_names_that_are_not_tokens_and_shows_the_character(name, shown):
    with pytest.raises(ValueError, match="is not a valid header name") as exc:
        wire.header_name(name)
    assert shown in str(exc.value)


def test_it_refuses_an_empty_or_non_string_name():
    with pytest.raises(ValueError, match="it is empty"):
        wire.header_name("")
    with pytest.raises(ValueError, match="must be a string"):
        wire.cookie_name(None)


@pytest.mark.parametrize("value", ["", "prod", "a b\tc", "max-age=600, public", "\"quoted\" ~!@#$%^&*()"])
def test_it_takes_visible_ascii_with_inner_spaces_and_tabs_as_values(value):
    assert wire.header_value(value) == value.encode("ascii")


@pytest.mark.parametrize("value, shown", [
    ("a\rb", "U+000D"), ("a\nb", "U+000A"), ("a\x00", "U+0000"), ("a\x0bb", "U+000B"), ("a\x7f", "U+007F"),
    ("a\x1b[31m", "U+001B"), ("5\u20ac", "'€' (U+20AC)"), ("caf\xe9", "'é' (U+00E9)"), ("\x85", "U+0085"),
    ("\ud800", "U+D800"), ("🚀", "U+1F680"),
])
def test_it_refuses_control_characters_and_non_ascii_in_values(value, shown):
    with pytest.raises(ValueError, match="a header value is visible US-ASCII text") as exc:
        wire.header_value(value)
    assert shown in str(exc.value)


@pytest.mark.parametrize("value", [" lead", "trail ", "\ttab", "tab\t"])
def test_it_refuses_whitespace_at_either_end_of_a_value(value):
    with pytest.raises(ValueError, match="may not start or end with a space or tab"):
        wire.header_value(value)


def test_a_header_line_is_both_parts_checked():
    assert wire.header_line("X-Env", "prod") == b"X-Env: prod\r\n"
    with pytest.raises(ValueError):
        wire.header_line("X-Env", "prod\r\nSet-Cookie: a=b")


@pytest.mark.parametrize("name", ["s=1\r\nContent-Length: 0", "a;b", "a b", "a,b", "", "a\"b"])
def test_it_refuses_cookie_names_that_are_not_tokens(name):
    with pytest.raises(ValueError, match="is not a valid cookie name"):
        wire.cookie_name(name)
    assert wire.cookie_name("sy_route") == b"sy_route"


@pytest.mark.parametrize("name", ["example.com", "a-b.c0.example", "x" * 63 + ".test", "localhost"])
def test_it_takes_host_names(name):
    assert wire.hostname(name) == name.encode()


@pytest.mark.parametrize("name", ["", "a..b", "-a.test", "a-.test", "a_b.test", "a b.test", "x" * 64 + ".test",
                                  "é.test", "a.test\r\n", ("a." * 127) + "bb"])
def test_it_refuses_what_is_not_a_host_name(name):
    with pytest.raises(ValueError, match="invalid host name"):
        wire.hostname(name)


@pytest.mark.parametrize("value", ["example.com", "example.com:8080", "10.0.0.1", "10.0.0.1:80", "[::1]",
                                   "[2001:db8::1]:443"])
def test_it_takes_host_header_values(value):
    assert wire.host_header(value) == value.encode()


@pytest.mark.parametrize("value", ["a b", "example.com:", "example.com:0", "example.com:65536", "[::1", "[x]",
                                   "[::1]80", "ex\x0bample.com", "example.com\r\nX: 1"])
def test_it_refuses_host_header_values(value):
    with pytest.raises(ValueError):
        wire.host_header(value)


def test_a_server_name_is_a_host_name_or_an_ip():
    assert wire.server_name("api.example.com") == b"api.example.com"
    assert wire.server_name("10.0.0.1") == b"10.0.0.1"
    with pytest.raises(ValueError):
        wire.server_name("api.example.com\x00")


@pytest.mark.parametrize("path, ok", [("/", True), ("/healthz?full=1", True), ("/a%20b", True), ("/a b", False),
                                      ("healthz", False), ("/a\x7f", False), ("/é", False), ("/a#frag", False)])
def test_a_request_target_is_visible_ascii_in_origin_form(path, ok):
    if ok:
        assert wire.origin_form(path) == path.encode()
    else:
        with pytest.raises(ValueError):
            wire.origin_form(path)


def test_sf_string_escapes_quote_and_backslash_and_refuses_what_cannot_be_sent():
    assert wire.sf_string('access list a"b\\c') == b'access list a\\"b\\\\c'
    assert wire.sf_string("access list office-1") == b"access list office-1"
    for bad in ("line\r\nInjected: 1", "caf\u00e9", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            wire.sf_string(bad)
