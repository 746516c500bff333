"""Through the API as a tenant editor: values a node cannot apply or
that would split a response are refused with a 400 naming the field; nothing is stored
and no version is made, so no node is ever asked to run them."""
import json

import pytest

from controlplane.proxy.models import Pool, Route
from controlplane.publishing.models import ConfigVersion

pytestmark = pytest.mark.django_db

BASE = "/api/v1"


@pytest.fixture
def editor(as_role):
    return as_role("editor")


def send(client, method: str, url: str, body: dict):
    # json.dumps by hand: ensure_ascii keeps lone surrogates and control characters intact
    return getattr(client, method)(f"{BASE}/{url}", json.dumps(body), content_type="application/json")


def refused(client, method: str, url: str, body: dict, field: str) -> dict:
    versions = ConfigVersion.objects.count()
    rows = (list(Route.objects.values()), list(Pool.objects.values()))
    r = send(client, method, url, body)
    assert r.status_code == 400 and field in r.json(), (r.status_code, r.content)
    assert (list(Route.objects.values()), list(Pool.objects.values())) == rows
    assert ConfigVersion.objects.count() == versions
    return r.json()


def new_route(world, **fields) -> dict:
    return {"tenant": "alpha", "name": "n", "hosts": ["n.alpha.example.com"], "pool": world["a"].pool.pk, **fields}


def test_a_header_value_with_a_non_latin1_character_is_refused(editor, world):
    body = new_route(world, response_headers={"set": [{"name": "X-N", "value": "5\u20ac"}]})
    errors = refused(editor, "post", "routes/", body, "response_headers")
    assert "set[0].value: contains '€' (U+20AC)" in errors["response_headers"][0]


@pytest.mark.parametrize("value", ["a\x0bb", "a\x7f", "a\x00", "a\r\nX-Injected: 1", "caf\xe9"])
def test_header_values_are_visible_ascii_only(editor, world, value):
    for field in ("request_headers", "response_headers"):
        body = new_route(world, **{field: {"add": [{"name": "X-V", "value": value}]}})
        refused(editor, "post", "routes/", body, field)
    refused(editor, "patch", f"routes/{world['a'].route.pk}/", {"headers": [{"name": "X-V", "value": value}]},
            "headers")


def test_a_ca_bundle_the_node_cannot_load_is_refused(editor, world):
    body = {"tls_enabled": True, "tls_verify": True, "tls_ca_pem": "-----BEGIN CERTIFICATE-----\nnope\n"}
    errors = refused(editor, "patch", f"pools/{world['a'].pool.pk}/", body, "tls_ca_pem")
    assert "cadata" in errors["tls_ca_pem"][0] or "PEM" in errors["tls_ca_pem"][0]


def test_a_sticky_cookie_that_would_split_the_response_is_refused(editor, world):
    cookie = "s=1\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nowned"
    errors = refused(editor, "patch", f"pools/{world['a'].pool.pk}/", {"sticky_cookie": cookie}, "sticky_cookie")
    assert "is not a valid cookie name" in errors["sticky_cookie"][0]
    r = send(editor, "patch", f"pools/{world['a'].pool.pk}/", {"sticky_cookie": "sy_route"})
    assert r.status_code == 200 and r.json()["sticky_cookie"] == "sy_route"


def test_a_hash_key_that_is_no_header_name_is_refused(editor, world):
    body = {"algorithm": "consistent_hash", "hash_on": "header", "hash_key": "X User"}
    refused(editor, "patch", f"pools/{world['a'].pool.pk}/", body, "hash_key")


@pytest.mark.parametrize("pattern", ["^/(a)\\1$", "^/(?=admin)", "^/(?<!x)y"])
def test_a_regex_re2_does_not_support_is_refused_on_path(editor, world, pattern):
    errors = refused(editor, "post", "routes/", new_route(world, path=pattern, path_type="regex"), "path")
    assert "RE2" in errors["path"][0]


def test_a_catastrophic_regex_is_accepted_because_re2_runs_it_in_linear_time(editor, world):
    r = send(editor, "post", "routes/", new_route(world, path="^/(a+)+$", path_type="regex"))
    assert r.status_code == 201, r.json()
