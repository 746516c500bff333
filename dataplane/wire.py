"""What may go on the wire: the one check of every configured string a node writes
to a socket (or compares with bytes read from one). Pure standard library.

The schema runs these on every snapshot value (so the control plane refuses a bad
value with its path), and the node's build code gets its bytes from them, so no
unchecked string reaches a socket.

- header names and cookie names: RFC 9110 tokens (RFC 6265: cookie-name = token);
- header values: visible US-ASCII (VCHAR) with spaces or tabs inside, never at either
  end, nothing else: no control characters (CR, LF, NUL, VT, DEL ...) and no non-ASCII
  text (obs-text is opaque to HTTP; clients read it as Latin-1, UTF-8 or garbage);
- host names: ASCII letters, digits and hyphens in dot-separated labels (IDNA already
  applied by the caller), at most 253 characters.

Each function returns the bytes to send and raises ``ValueError`` saying what is wrong.
"""
from __future__ import annotations

import ipaddress
import re

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20\x21-\x7e\t]*[\x21-\x7e])?)?")
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)
_PORT = re.compile(r"[0-9]{1,5}")
_ORIGIN_FORM = re.compile(r"/[\x21-\x7e]*")


def _first_bad(text: str, allowed) -> str:
    """The first character ``allowed`` rejects, spelled so that a person can see it."""
    for ch in text:
        if not allowed(ch):
            if ch.isprintable() and not ch.isspace():
                return f"{ch!r} (U+{ord(ch):04X})"
            kind = {" ": "a space", "\t": "a tab"}.get(ch) or ("a control character" if ch.isascii()
                                                              else "not printable")
            return f"U+{ord(ch):04X} ({kind})"
    return ""


def token(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string")
    if not _TOKEN.fullmatch(text):
        why = f"it contains {_first_bad(text, TCHAR.__contains__)}" if text else "it is empty"
        raise ValueError(f"{text!r} is not a valid {what}: {why}; "
                         f"use letters, digits and {TCHAR[:15]} only (RFC 9110 token)")
    return text.encode("ascii")


def header_name(name: str) -> bytes:
    return token(name, "header name")


def cookie_name(name: str) -> bytes:
    return token(name, "cookie name")


def header_value(value: str) -> bytes:
    """A field value (RFC 9110 5.5) as this proxy accepts it: see the module docstring."""
    if not isinstance(value, str):
        raise ValueError("header value must be a string")
    if _FIELD_VALUE.fullmatch(value):
        return value.encode("ascii")
    bad = _first_bad(value, lambda ch: " " <= ch <= "~" or ch == "\t")
    if not bad:
        raise ValueError("may not start or end with a space or tab")
    raise ValueError(f"contains {bad}: a header value is visible US-ASCII text with spaces or tabs "
                     "inside (no control characters such as CR, LF, NUL, VT or DEL; no non-ASCII text)")


def header_line(name: str, value: str) -> bytes:
    """``Name: value\\r\\n``, both parts checked."""
    return header_name(name) + b": " + header_value(value) + b"\r\n"


def sf_string(text: str) -> bytes:
    """The inside of an RFC 8941 sf-string (what goes between its quotes, e.g. a
    Proxy-Status ``details``): printable ASCII, with backslash and quote escaped."""
    bad = _first_bad(text, lambda ch: " " <= ch <= "~")
    if bad:
        raise ValueError(f"may only hold printable ASCII characters ({bad})")
    return text.replace("\\", "\\\\").replace('"', '\\"').encode("ascii")


def hostname(name: str) -> bytes:
    """An ASCII host name (IDNA already applied): LDH labels of 1-63, 253 at most."""
    if not isinstance(name, str) or not name.isascii() or len(name) > 253 \
            or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"invalid host name {name!r}")
    return name.encode("ascii")


def server_name(name: str) -> bytes:
    """A name to verify a peer certificate against (and send as SNI): a host name or an IP."""
    try:
        return ipaddress.ip_address(name).compressed.encode("ascii")
    except ValueError:
        return hostname(name)


def host_header(value: str) -> bytes:
    """A Host header value: host name, IPv4 or [IPv6], with an optional :port."""
    host, port = value, ""
    if value.startswith("["):
        host, bracket, port = value[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"invalid Host {value!r}")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid Host {value!r}: {host!r} is not an IPv6 address") from None
    else:
        if ":" in value:
            host, port = value.rsplit(":", 1)
            if port == "":
                raise ValueError(f"invalid Host {value!r}: empty port")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            hostname(host)
    if port and not (_PORT.fullmatch(port) and 0 < int(port) < 65536):
        raise ValueError(f"invalid Host {value!r}: port must be 1-65535")
    return value.encode("ascii")


def origin_form(path: str) -> bytes:
    """A request target (RFC 9112 origin-form): ``/`` then visible US-ASCII, no ``#``."""
    if not isinstance(path, str) or not _ORIGIN_FORM.fullmatch(path) or "#" in path:
        raise ValueError("must start with / and contain only visible US-ASCII characters "
                         "(no spaces, control characters, # or non-ASCII text: percent-encode them)")
    return path.encode("ascii")
