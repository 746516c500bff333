"""Sign-in across processes: two real Daphne processes on one installation (embedded:
one SQLite file; production: PostgreSQL + Redis), a user at one and an attacker at the
other. A TOTP code or recovery code used at one process does not sign in at the other;
the login throttle counts failures at both together and holds on every sign-in path
(password form, admin sign-in, code step, recovery code, security key step); a user's
API tokens stop working at every process once the user is deactivated or loses the
membership the token acts in."""
from __future__ import annotations

import json
import re
import time

import pytest
import requests

from tests.accounts.softkey import SoftKey
from tests.accounts.test_two_factor import totp
from tests.e2e.conftest import MODES, make_control_plane
from tests.e2e.harness import PYTHON, HarnessError, Proc, http_get
from tests.support import free_port, wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "two processes password"


@pytest.fixture(scope="module", params=MODES)
def two_processes(request, tmp_path_factory):
    """(control plane, [base URL of process A, of process B])."""
    root = tmp_path_factory.mktemp(f"mfa-{request.param}")
    cp, cleanup = make_control_plane(request.param, root)
    procs = []
    try:
        cp.manage("shell", "-c", "from django.contrib.auth import get_user_model\n"
                                 "U = get_user_model()\n"
                                 f"U.objects.create_user('ops', 'ops@example.com', {PASSWORD!r})\n"
                                 f"U.objects.create_user('target', 'target@example.com', {PASSWORD!r})")
        for name in ("a", "b"):
            port = free_port()
            proc = Proc(f"daphne {name}", [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                           "controlplane.asgi:application"],
                        {**cp.env, "SWITCHYARD_LOGIN_MAX_FAILURES": "3"}, root / f"daphne-{name}.log").start()
            procs.append((proc, port))
        for proc, port in procs:
            def up(proc=proc, port=port):
                if not proc.alive:
                    raise HarnessError(f"{proc.name} exited\n{proc.tail()}")
                return http_get(port, "/login/", timeout=2).status == 200
            wait_until(up, 90, f"{proc.name} to answer", interval=0.2, on_timeout=proc.tail)
        yield cp, [f"http://127.0.0.1:{port}" for _, port in procs]
    finally:
        for proc, _ in procs:
            proc.stop()
        cleanup()


class Browser:
    """A cookie jar and the dashboard's forms (CSRF token from the cookie) against one process."""

    def __init__(self, base: str):
        self.base, self.session = base, requests.Session()
        self.session.trust_env = False

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base + path, allow_redirects=False, timeout=60)

    def post(self, path: str, data: dict) -> requests.Response:
        if "csrftoken" not in self.session.cookies:
            self.get("/login/")
        return self.session.post(self.base + path, data={**data, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]},
                                 allow_redirects=False, timeout=60)

    def api(self, path: str, token: str) -> requests.Response:
        return requests.get(self.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def password(self, username: str, password: str = PASSWORD) -> requests.Response:
        return self.post("/login/", {"username": username, "password": password})

    def signed_in(self) -> bool:
        return self.get("/routes/").status_code == 200


def test_a_code_used_at_one_process_does_not_sign_in_at_the_other(two_processes):
    _, (a, b) = two_processes
    owner = Browser(a)
    assert owner.password("ops").status_code == 302
    page = owner.get("/account/two-factor/").text
    secret = re.search(r'id="totp-secret">([A-Z2-7=]+)<', page).group(1)
    assert owner.post("/account/two-factor/", {"action": "enable", "code": totp(secret)}).status_code == 302
    codes = re.search(r'<pre class="mono">(.*?)</pre>', owner.get("/account/two-factor/").text, re.S).group(1).split()

    for _attempt in range(3):
        step = int(time.time()) // 30
        code = totp(secret, 1)  # the enrolment used the current step's code
        user = Browser(a)
        assert user.password("ops").headers["Location"] == "/login/code/"
        r = user.post("/login/code/", {"code": code})
        assert r.status_code == 302 and user.signed_in(), r.text[-500:]
        thief = Browser(b)
        assert thief.password("ops").headers["Location"] == "/login/code/"
        r = thief.post("/login/code/", {"code": code})
        if int(time.time()) // 30 <= step + 1:  # the code was still inside its window at B
            break
    else:
        pytest.fail("the machine is too slow to try a code inside its 30 s window")
    assert r.status_code == 200 and "not valid" in r.text
    assert not thief.signed_in()

    # a recovery code, used at B, does not sign in again at A
    first = Browser(b)
    first.password("ops")
    assert first.post("/login/code/", {"code": codes[0]}).status_code == 302 and first.signed_in()
    again = Browser(a)
    again.password("ops")
    assert again.post("/login/code/", {"code": codes[0]}).status_code == 200
    assert not again.signed_in()


def test_failed_sign_ins_at_both_processes_count_together(two_processes):
    _, (a, b) = two_processes
    attacker_a, attacker_b = Browser(a), Browser(b)
    assert attacker_a.password("target", "wrong 1").status_code == 200
    assert attacker_b.password("target", "wrong 2").status_code == 200
    assert attacker_a.password("target", "wrong 3").status_code == 200
    # the fourth try, with the right password, is refused at either process
    r = Browser(b).password("target")
    assert r.status_code == 429 and "Too many failed sign-in attempts" in r.text
    assert Browser(a).password("target").status_code == 429


def test_the_cache_is_shared_by_the_processes_in_production(two_processes):
    """allauth keeps rate limits and used-code markers in Django's cache: in production
    two processes see one Redis cache; embedded mode (one web process) keeps local memory."""
    cp, _ = two_processes
    if cp.mode == "embedded":
        backend = cp.manage("shell", "-c", "from django.conf import settings; "
                                           "print(settings.CACHES['default']['BACKEND'])").stdout
        assert backend.strip().endswith("LocMemCache")
        return
    key = f"mfa-shared-{time.monotonic_ns()}"
    add = f"from django.core.cache import cache; print('added' if cache.add({key!r}, 'y', 60) else 'taken')"
    assert cp.manage("shell", "-c", add).stdout.strip().endswith("added")
    assert cp.manage("shell", "-c", add).stdout.strip().endswith("taken")  # another process sees it


def create_user(cp, username: str, **fields) -> None:
    cp.manage("shell", "-c", "from django.contrib.auth import get_user_model\n"
                             f"get_user_model().objects.create_user({username!r}, 'x@example.com', {PASSWORD!r}, "
                             f"**{fields!r})")


def enrol_totp(browser: Browser) -> tuple[str, list[str]]:
    page = browser.get("/account/two-factor/").text
    secret = re.search(r'id="totp-secret">([A-Z2-7=]+)<', page).group(1)
    assert browser.post("/account/two-factor/", {"action": "enable", "code": totp(secret)}).status_code == 302
    codes = re.search(r'<pre class="mono">(.*?)</pre>', browser.get("/account/two-factor/").text, re.S).group(1)
    return secret, codes.split()


def refused(r: requests.Response) -> bool:
    return r.status_code == 429 and "Too many failed sign-in attempts" in r.text


def test_the_throttle_holds_on_the_admin_sign_in(two_processes):
    cp, (a, b) = two_processes
    create_user(cp, "admin-target", is_staff=True)
    for base, n in ((a, 1), (b, 2), (a, 3)):
        r = Browser(base).post("/admin/login/", {"username": "admin-target", "password": f"wrong {n}",
                                                 "next": "/admin/"})
        assert r.status_code == 200
    r = Browser(b).post("/admin/login/", {"username": "admin-target", "password": PASSWORD, "next": "/admin/"})
    assert r.status_code == 429
    assert Browser(a).password("admin-target").status_code == 429  # and the dashboard's form


def test_the_throttle_holds_on_the_code_step(two_processes):
    cp, (a, b) = two_processes
    create_user(cp, "code-target")
    owner = Browser(a)
    owner.password("code-target")
    secret, _ = enrol_totp(owner)
    attacker_a, attacker_b = Browser(a), Browser(b)
    for attacker in (attacker_a, attacker_b):
        assert attacker.password("code-target").headers["Location"] == "/login/code/"
    for attacker, wrong in ((attacker_a, "000000"), (attacker_b, "000001"), (attacker_a, "000002")):
        assert attacker.post("/login/code/", {"code": wrong}).status_code == 200
    assert refused(attacker_b.post("/login/code/", {"code": totp(secret, 1)}))
    assert not attacker_b.signed_in()


def test_the_throttle_holds_on_a_recovery_code(two_processes):
    cp, (a, b) = two_processes
    create_user(cp, "recovery-target")
    owner = Browser(b)
    owner.password("recovery-target")
    _, codes = enrol_totp(owner)
    attacker_a, attacker_b = Browser(a), Browser(b)
    for attacker in (attacker_a, attacker_b):
        attacker.password("recovery-target")
    for attacker, n in ((attacker_b, 1), (attacker_a, 2), (attacker_b, 3)):
        assert attacker.post("/login/code/", {"code": f"{n:08d}"}).status_code == 200
    assert refused(attacker_a.post("/login/code/", {"code": codes[0]}))
    assert not attacker_a.signed_in()
    left = cp.manage("shell", "-c", "from controlplane.accounts import twofactor\n"
                                    "from django.contrib.auth import get_user_model\n"
                                    "print(len(twofactor.recovery_codes("
                                    "get_user_model().objects.get(username='recovery-target'))))").stdout
    assert left.strip().splitlines()[-1] == "10"  # the refused attempt did not use the code up


def test_the_throttle_holds_on_the_security_key_step(two_processes):
    cp, (a, b) = two_processes
    a, b = (base.replace("127.0.0.1", "localhost") for base in (a, b))  # keys need a host name
    create_user(cp, "key-target")
    owner = Browser(a)
    owner.password("key-target")
    key = SoftKey(origin=a, rp_id="localhost")
    page = owner.get("/account/two-factor/").text
    options = json.loads(re.search(r'id="webauthn-creation-options" type="application/json">(.*?)</script>',
                                   page, re.S).group(1))
    r = owner.post("/account/two-factor/", {"action": "add_key", "name": "blue key",
                                            "credential": key.register(options)})
    assert r.status_code == 302
    user = Browser(b)
    user.password("key-target")
    request_options = user.get("/login/key/").json()["request_options"]
    key.origin = b
    assert user.post("/login/key/", {"credential": key.assert_(request_options)}).status_code == 302
    assert user.signed_in()  # a key signs in at the other process

    attacker_a, attacker_b = Browser(a), Browser(b)
    for attacker in (attacker_a, attacker_b):
        attacker.password("key-target")
    for attacker in (attacker_a, attacker_b, attacker_a):
        wrong = SoftKey(origin=attacker.base, rp_id="localhost")
        r = attacker.post("/login/key/", {"credential": wrong.assert_(attacker.get("/login/key/").json()[
            "request_options"])})
        assert r.status_code == 200 and "not accepted" in r.text
    key.origin = b
    r = attacker_b.post("/login/key/", {"credential": key.assert_(attacker_b.get("/login/key/").json()[
        "request_options"])})
    assert refused(r) and not attacker_b.signed_in()


TOKENS = """
import json
from django.contrib.auth import get_user_model
from controlplane.tenancy.models import ApiToken, Membership
from tests.controlplane import helpers as h
U = get_user_model()
t = h.tenant({slug!r})
h.pool({slug!r} + "-pool", t)
staff = U.objects.create_superuser({slug!r} + "-root", "root@example.com", {password!r})
owner = U.objects.create_user({slug!r} + "-owner", "o@example.com", {password!r})
Membership.objects.create(user=owner, tenant=t, role="owner")
dev = U.objects.create_user({slug!r} + "-dev", "d@example.com", {password!r})
m = Membership.objects.create(user=dev, tenant=t, role="editor")
print(json.dumps({{"dev": dev.pk, "membership": m.pk,
                  "user_token": ApiToken.issue(dev)[1],
                  "tenant_token": ApiToken.issue(dev, tenant=t, role="editor")[1]}}))
"""


def seed_tokens(cp, slug: str) -> dict:
    out = cp.manage("shell", "-c", TOKENS.format(slug=slug, password=PASSWORD)).stdout
    return json.loads(out.strip().splitlines()[-1])


def pools_of(browser: Browser, token: str) -> tuple[int, set[str]]:
    r = browser.api("/api/v1/pools/", token)
    return r.status_code, {p["tenant"] for p in r.json()["results"]} if r.status_code == 200 else set()


def test_api_tokens_stop_working_when_the_user_is_deactivated(two_processes):
    cp, (a, b) = two_processes
    seeded = seed_tokens(cp, "deact")
    api = Browser(b)
    assert pools_of(api, seeded["user_token"]) == (200, {"deact"})
    assert pools_of(api, seeded["tenant_token"]) == (200, {"deact"})
    staff = Browser(a)
    assert staff.password("deact-root").status_code == 302
    r = staff.post(f"/users/{seeded['dev']}/active/", {"active": "0"})
    assert r.status_code == 302
    for token in (seeded["user_token"], seeded["tenant_token"]):
        r = api.api("/api/v1/pools/", token)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_tokens_stop_working_when_the_user_loses_the_membership(two_processes):
    cp, (a, b) = two_processes
    seeded = seed_tokens(cp, "leave")
    api = Browser(a)
    assert pools_of(api, seeded["tenant_token"]) == (200, {"leave"})
    owner = Browser(b)
    assert owner.password("leave-owner").status_code == 302
    r = owner.post(f"/tenants/leave/members/{seeded['membership']}/remove/", {})
    assert r.status_code == 302
    assert api.api("/api/v1/pools/", seeded["tenant_token"]).status_code == 401  # the tenant's token
    assert pools_of(api, seeded["user_token"]) == (200, set())  # the user's own token: no tenant left


def race(browsers: list[Browser], code: str) -> list[int]:
    """The same code posted by every browser at once (each with its own pending sign-in)."""
    from concurrent.futures import ThreadPoolExecutor

    for browser in browsers:
        assert browser.password(browser.username).headers["Location"] == "/login/code/"
    with ThreadPoolExecutor(len(browsers)) as pool:
        return list(pool.map(lambda br: br.post("/login/code/", {"code": code}).status_code, browsers))


def test_one_code_tried_at_both_processes_at_once_signs_in_once(two_processes):
    cp, (a, b) = two_processes
    results = {}
    for kind in ("totp", "recovery"):
        username = f"race-{kind}"
        create_user(cp, username)
        owner = Browser(a)
        owner.password(username)
        secret, codes = enrol_totp(owner)
        browsers = [Browser(base) for base in (a, b, a, b)]
        for browser in browsers:
            browser.username = username
        step = int(time.time()) // 30
        results[kind] = race(browsers, totp(secret, 1) if kind == "totp" else codes[0])
        if kind == "totp":
            assert int(time.time()) // 30 <= step + 2, "the machine is too slow to race a code inside its window"
    assert sorted(results["totp"]) == [200, 200, 200, 302], results
    assert sorted(results["recovery"]) == [200, 200, 200, 302], results
