"""Forms people can read: human labels and units on the route and pool forms, header
rules without JSON, "This field is required." everywhere, a preview whose publish
button comes before the folded form, certificate file pickers, the key kept after a
refusal, OpenSSL's self-signed recipe accepted with a warning, and a label on every
input of the pages touched."""
from __future__ import annotations

import html
import re
import subprocess
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from controlplane.proxy.models import Certificate, Pool, Route
from tests.controlplane import helpers as h

from .test_forms import errors_of, route_post

pytestmark = pytest.mark.django_db
REQUIRED = "This field is required."


def openssl_self_signed(tmp_path, host: str, *extra: str) -> tuple[str, str]:
    """OpenSSL 3's usual recipe (CA:TRUE by default), run as a user runs it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "30", "-subj", f"/CN={host}", *extra], check=True, capture_output=True, timeout=120)
    return cert.read_text(), key.read_text()


class Controls(HTMLParser):
    """Every form control of a page, and the ids that a <label for> names."""

    def __init__(self):
        super().__init__()
        self.controls, self.label_for, self.depth_in_label = [], set(), 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label":
            self.depth_in_label += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit", "button"):
            self.controls.append((tag, a, self.depth_in_label > 0))

    def handle_endtag(self, tag):
        if tag == "label":
            self.depth_in_label -= 1


def unlabelled(page_html: str) -> list[str]:
    parser = Controls()
    parser.feed(page_html)
    return [f"{tag} name={a.get('name')}" for tag, a, wrapped in parser.controls
            if not wrapped and a.get("id") not in parser.label_for and not a.get("aria-label")]


def label_of(page_html: str, control_id: str) -> str:
    m = re.search(rf'<label for="{control_id}"[^>]*>(.*?)</label>', page_html, re.S)
    assert m, f"no label for {control_id}"
    return html.unescape(re.sub(r"<.*?>", "", m.group(1))).strip()


def textarea_text(page_html: str, name: str) -> str:
    m = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', page_html, re.S)
    assert m, f"no textarea {name}"
    return html.unescape(m.group(1)).strip()


# ------------------------------------------------------------------ routes and pools

def test_it_labels_route_and_pool_fields_in_words_with_units(world, login):
    c = login(world["users"]["shop-editor"])
    route_page = c.get(reverse("dashboard:route_new")).content.decode()
    assert label_of(route_page, "id_max_body_size") == "Maximum body size"
    assert 'name="max_body_size" value="1 MiB"' in route_page
    assert label_of(route_page, "id_hsts_max_age") == "HSTS max-age"
    assert 'id="id_hsts_max_age-unit">seconds<' in route_page
    assert label_of(route_page, "id_request_headers") == "Request headers"

    pool_page = c.get(reverse("dashboard:pool_new")).content.decode()
    assert label_of(pool_page, "id_tls_sni") == "TLS server name"
    assert label_of(pool_page, "id_tls_ca_pem") == "CA bundle (PEM)"
    for name in ("connect_timeout", "read_timeout", "health_check_interval", "health_check_timeout"):
        assert re.search(rf'name="{name}"[^>]*aria-describedby="[^"]*id_{name}-unit"', pool_page), name
        assert f'id="id_{name}-unit">seconds<' in pool_page
    assert "Tls sni" not in pool_page and "Tls ca pem" not in pool_page


@pytest.mark.parametrize("typed, stored", [("512 KiB", 512 * 1024), ("10 MiB", 10 * 1024 ** 2), ("1.5 MiB", 1572864),
                                           ("2m", 2 * 1024 ** 2), ("1048576", 1048576), ("0", 0)])
def test_it_takes_body_sizes_as_people_write_them(world, login, typed, stored):
    c = login(world["users"]["shop-editor"])
    html_ = c.post(reverse("dashboard:route_new"), route_post(world, max_body_size=typed)).content.decode()
    assert 'id="preview"' in html_, errors_of(html_)
    digest = re.search(r'name="digest" value="([0-9a-f]{64})"', html_).group(1)
    response = c.post(reverse("dashboard:route_new"),
                      route_post(world, max_body_size=typed, _action="publish", digest=digest))
    assert response.status_code == 302
    route = Route.objects.get(name="checkout")
    assert route.max_body_size == stored
    edit = c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    shown = re.search(r'name="max_body_size" value="([^"]*)"', edit).group(1)
    assert shown == {512 * 1024: "512 KiB", 10 * 1024 ** 2: "10 MiB", 1572864: "1536 KiB", 2 * 1024 ** 2: "2 MiB",
                     1048576: "1 MiB", 0: "0"}[stored]


def test_it_explains_a_size_it_cannot_read(world, login):
    c = login(world["users"]["shop-editor"])
    html_ = c.post(reverse("dashboard:route_new"), route_post(world, max_body_size="ten megs")).content.decode()
    assert errors_of(html_)["max_body_size"] == ["ten megs: write a size such as 512 KiB, 10 MiB or 1048576 (bytes)"]
    assert not Route.objects.filter(name="checkout").exists()


def test_it_offers_header_rules_as_rows_with_a_text_fallback(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    from controlplane.proxy import services
    services.update_route(h.ACTOR, route, request_headers={"set": [{"name": "X-Env", "value": "prod: eu"}],
                                                           "add": [], "remove": ["Server"]})
    page = c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    assert re.search(r'<textarea[^>]*data-rows-editor="rules"[^>]*name="request_headers"', page) or \
        re.search(r'<textarea[^>]*name="request_headers"[^>]*data-rows-editor="rules"', page)
    assert textarea_text(page, "request_headers") == "set X-Env: prod: eu\nremove Server"
    assert re.search(r'<textarea[^>]*name="headers"[^>]*data-rows-editor="matches"', page) or \
        re.search(r'<textarea[^>]*data-rows-editor="matches"[^>]*name="headers"', page)
    assert "{&quot;" not in page and '{"set"' not in page  # no JSON to edit
    assert re.search(r'<script src="/static/dashboard/forms\.js[^"]*"></script>', page)


def test_it_says_this_field_is_required_for_every_missing_value(world, login):
    c = login(world["users"]["shop-editor"])
    html_ = c.post(reverse("dashboard:route_new"), route_post(world, name="", hosts="", pool="")).content.decode()
    errors = errors_of(html_)
    assert errors["name"] == [REQUIRED] and errors["hosts"] == [REQUIRED] and errors["pool"] == [REQUIRED]

    html_ = c.post(reverse("dashboard:pool_new"), {"tenant": str(world["shop"].pk), "name": "",
                                                   "targets": f"{h.PUBLIC_IP}:8080"}).content.decode()
    assert errors_of(html_)["name"] == [REQUIRED]
    assert not Pool.objects.filter(name="").exists()

    cert_pem, key_pem = h.issue("new.shop.example.com")
    html_ = c.post(reverse("dashboard:certificate_new"), {"tenant": str(world["shop"].pk), "name": "new",
                                                          "certificate_pem": cert_pem}).content.decode()
    assert errors_of(html_)["private_key_pem"] == [REQUIRED]
    html_ = c.post(reverse("dashboard:certificate_new"), {"tenant": str(world["shop"].pk), "name": "",
                                                          "certificate_pem": cert_pem,
                                                          "private_key_pem": key_pem}).content.decode()
    assert errors_of(html_)["name"] == [REQUIRED]


def test_it_shows_the_diff_and_the_publish_button_before_the_folded_form(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    data = route_post(world, name=route.name, hosts="\n".join(route.hosts), priority="7", _action="preview")
    page = c.post(reverse("dashboard:route_edit", args=[route.pk]), data).content.decode()
    diff, publish = page.index('data-diff-item="route:shop/shop-api"'), page.index('id="publish-button"')
    folded = re.search(r'<details class="panel form-fields" id="form-fields">', page)
    assert folded, "the form is folded under the preview"
    assert diff < publish < folded.start() < page.index('name="name"')
    assert re.search(r"<td>priority</td><td class=\"before\"><pre>0</pre></td><td class=\"after\"><pre>7</pre>", page)

    pool = world["objs"]["shop"]["pool"]
    page = c.get(reverse("dashboard:pool_edit", args=[pool.pk])).content.decode()
    assert '<div class="panel form-fields" id="form-fields">' in page  # not folded before a preview


# ------------------------------------------------------------------ certificates

def test_it_uploads_a_certificate_and_key_chosen_as_files(world, login):
    c = login(world["users"]["shop-editor"])
    cert_pem, key_pem = h.issue("files.shop.example.com")
    page = c.get(reverse("dashboard:certificate_new")).content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert re.search(r'<input type="file" name="certificate_file"', page)
    assert label_of(page, "id_private_key_file") == "Private key file"
    response = c.post(reverse("dashboard:certificate_new"), {
        "tenant": str(world["shop"].pk), "name": "from-files", "certificate_pem": "", "private_key_pem": "",
        "certificate_file": SimpleUploadedFile("fullchain.pem", cert_pem.encode(), "application/x-pem-file"),
        "private_key_file": SimpleUploadedFile("privkey.pem", key_pem.encode(), "application/x-pem-file")})
    cert = Certificate.objects.get(name="from-files")
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:certificate", args=[cert.pk])
    assert cert.sans == ["files.shop.example.com"] and cert.tenant == world["shop"]


def test_it_keeps_the_key_and_the_chosen_files_after_a_refusal(world, login):
    c = login(world["users"]["shop-editor"])
    cert_pem, _ = h.issue("keep.shop.example.com")
    _, other_key = h.issue("other.shop.example.com")
    page = c.post(reverse("dashboard:certificate_new"), {
        "tenant": str(world["shop"].pk), "name": "kept", "certificate_pem": cert_pem,
        "private_key_pem": other_key}).content.decode()
    assert "does not match" in " ".join(errors_of(page)["private_key_pem"])
    assert textarea_text(page, "private_key_pem") == other_key.strip()
    assert textarea_text(page, "certificate_pem") == cert_pem.strip()

    page = c.post(reverse("dashboard:certificate_new"), {
        "tenant": str(world["shop"].pk), "name": "kept", "certificate_pem": "",
        "certificate_file": SimpleUploadedFile("cert.pem", cert_pem.encode()),
        "private_key_file": SimpleUploadedFile("key.pem", other_key.encode())}).content.decode()
    assert errors_of(page)["private_key_pem"]
    assert textarea_text(page, "private_key_pem") == other_key.strip()  # what the file held, not to choose again
    assert not Certificate.objects.filter(name="kept").exists()


def test_it_refuses_a_binary_file_with_a_hint(world, login):
    c = login(world["users"]["shop-editor"])
    page = c.post(reverse("dashboard:certificate_new"), {
        "tenant": str(world["shop"].pk), "name": "der",
        "certificate_file": SimpleUploadedFile("cert.der", b"\x30\x82\x03\xff\xa0\x03\x02\x01\x02\x02\xff\xfe")
    }).content.decode()
    assert "is not a PEM text file" in errors_of(page)["certificate_file"][0]


def test_it_accepts_openssls_self_signed_recipe_with_a_warning(world, login, tmp_path):
    c = login(world["users"]["shop-editor"])
    cert_pem, key_pem = openssl_self_signed(tmp_path, "self.shop.example.com",
                                            "-addext", "subjectAltName=DNS:self.shop.example.com")
    response = c.post(reverse("dashboard:certificate_new"), {
        "tenant": str(world["shop"].pk), "name": "self-signed",
        "certificate_file": SimpleUploadedFile("cert.pem", cert_pem.encode()),
        "private_key_file": SimpleUploadedFile("key.pem", key_pem.encode())}, follow=True)
    page = response.content.decode()
    cert = Certificate.objects.get(name="self-signed")
    assert any("CA:TRUE" in w for w in cert.warnings)
    assert "put the server" not in page
    assert "Certificate self-signed uploaded with 2 warnings" in html.unescape(page)
    assert "marked as a CA (basicConstraints CA:TRUE" in html.unescape(page)


def test_it_still_refuses_a_real_chain_with_the_ca_first(world, login):
    c = login(world["users"]["shop-editor"])
    leaf = h.ca().create_child_ca().issue_cert("order.shop.example.com")
    assert len(leaf.cert_chain_pems) == 2
    reversed_chain = "".join(p.bytes().decode() for p in reversed(leaf.cert_chain_pems))
    page = c.post(reverse("dashboard:certificate_new"), {
        "tenant": str(world["shop"].pk), "name": "reversed", "certificate_pem": reversed_chain,
        "private_key_pem": leaf.private_key_pem.bytes().decode()}).content.decode()
    assert any("put the server (leaf) certificate first" in e for e in errors_of(page)["certificate_pem"])
    assert not Certificate.objects.filter(name="reversed").exists()


def test_it_keeps_the_stored_key_when_renewing_with_a_file(world, login):
    c = login(world["users"]["shop-editor"])
    cert = world["objs"]["shop"]["cert"]
    renewed, key = h.issue("shop.example.com", "*.shop.example.com")
    page = c.get(reverse("dashboard:certificate_edit", args=[cert.pk])).content.decode()
    assert label_of(page, "id_certificate_file") == "Renewed certificate file"
    response = c.post(reverse("dashboard:certificate_edit", args=[cert.pk]), {
        "name": cert.name, "etag": html.unescape(re.search(r'name="etag" value="([^"]+)"', page).group(1)),
        "certificate_file": SimpleUploadedFile("renewed.pem", renewed.encode()),
        "private_key_file": SimpleUploadedFile("key.pem", key.encode())})
    assert response.status_code == 302, errors_of(response.content.decode())
    cert.refresh_from_db()
    assert cert.certificate_pem.strip() == renewed.strip()


# ------------------------------------------------------------------ labels

def test_every_input_of_the_touched_pages_has_a_label(world, login):
    staff = login(world["users"]["staff"])
    pages = [reverse("dashboard:routes"), reverse("dashboard:route_new"),
             reverse("dashboard:route_edit", args=[world["objs"]["shop"]["route"].pk]),
             reverse("dashboard:pool_new"), reverse("dashboard:certificate_new"),
             reverse("dashboard:certificate_edit", args=[world["objs"]["shop"]["cert"].pk]),
             reverse("dashboard:audit"), reverse("dashboard:tenant", args=["shop"])]
    for url in pages:
        page = staff.get(url).content.decode()
        assert unlabelled(page) == [], url
    tenant_page = staff.get(reverse("dashboard:tenant", args=["shop"])).content.decode()
    assert label_of(tenant_page, "id_suffix") == "Hostname suffix"
    assert label_of(tenant_page, "member-role") == "Role" and label_of(tenant_page, "token-role") == "Role"
    routes_page = staff.get(reverse("dashboard:routes")).content.decode()
    assert label_of(routes_page, "routes-filter") == "Filter routes"
    assert 'class="scroll-hint"' in routes_page and 'class="table-wrap scroll-cue"' in routes_page
