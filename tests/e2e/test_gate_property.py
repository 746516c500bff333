"""The one gate, proven over the API: every change the API accepts
is applied by a real node.

Hypothesis draws API calls over the writable fields of ``routes/``, ``pools/`` and
``certificates/`` (``gate_strategies.py``: plausible and hostile values), as platform
staff and as a tenant editor, and sends them with bearer tokens to a real control plane
(Daphne) in both modes. For every call:

- answered 2xx: the latest version, materialized with its private keys, goes through
  what a node does with a push — ``schema.encode_push``/``decode_push``, the hash
  check, ``dataplane.applier.NodeState().apply`` — in this process, on one NodeState
  that lives through every version as a node does;
- answered 400: the body is JSON naming a field of the resource, and no version was
  created (a 413 for an oversized body changes nothing either).

Every ``SYNC_EVERY`` examples, and at the end, the real node process connected over the
sync WebSocket must have ACKed the latest version, and it must never have NACKed one.
After each example the baseline route and pool of both actors are restored and what the
example created is deleted, so every example starts from the same config and a failure
shrinks to the call that causes it.

``SWITCHYARD_GATE_EXAMPLES`` (default 150 per mode, about 20 s each) sets the number of
examples; a soak runs e.g. ``SWITCHYARD_GATE_EXAMPLES=2000`` (the test's timeout grows
with it). The run is derandomized: the same examples every time.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import reprlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from dataplane import applier, schema
from tests.e2e.gate_strategies import Change, changes
from tests.e2e.harness import CPShell, wait_until

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("SWITCHYARD_GATE_EXAMPLES", "150"))
SYNC_EVERY = 10
GATESHELL = Path(__file__).with_name("gateshell.py")
NODE_DEADLINE = 15.0  # coalescing (~150 ms) + push + apply on a loaded 2-core machine

RESOURCES = {"route": "routes", "pool": "pools", "certificate": "certificates"}
# Fields a 400 may name, per resource (the writable fields of the API).
FIELDS = {
    "route": {"tenant", "name", "hosts", "path", "path_type", "methods", "headers", "priority", "pool",
              "strip_prefix", "preserve_host", "request_headers", "response_headers", "websocket",
              "https_redirect", "hsts_max_age", "max_body_size", "forwarded", "certificate", "acme", "enabled"},
    "pool": {"tenant", "name", "algorithm", "hash_on", "hash_key", "sticky_cookie", "connect_timeout",
             "read_timeout", "retries", "passive_failures", "passive_ejection_seconds", "tls_enabled",
             "tls_verify", "tls_ca_pem", "tls_sni", "health_check", "targets"},
    "certificate": {"tenant", "name", "certificate_pem", "private_key_pem", "ca_bundle_pem"},
}


def short(value) -> str:
    """A repr that fits in a failure message (bodies may hold megabyte strings)."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = 160
    r.maxlist, r.maxdict, r.maxlevel = 8, 25, 5
    return r.repr(value)



class Api:
    """JSON over HTTP to the control plane, as one bearer token."""

    def __init__(self, port: int):
        self.port = port

    def call(self, token: str, method: str, path: str, body=None) -> tuple[int, object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {token}", "Host": "127.0.0.1", "X-Change-Note": "gate property"}
        data = None
        if body is not None:
            data = json.dumps(body, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, f"/api/v1/{path}", body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw[:500]


@dataclass
class Trail:
    """What one example left behind: objects it created, baseline objects it changed."""
    created: list[tuple[str, int]] = field(default_factory=list)
    patched: set[tuple[str, int]] = field(default_factory=set)

    def last(self, resource: str) -> int | None:
        return next((pk for kind, pk in reversed(self.created) if kind == resource), None)


class Gate:
    """One stack with its real node, an in-process NodeState, and the baseline objects."""

    def __init__(self, stack, shell: CPShell, node, spaces: dict):
        self.stack, self.shell, self.node, self.spaces = stack, shell, node, spaces
        self.api = Api(stack.cp_port)
        self.node_state = applier.NodeState()
        self.applied: int | None = None
        self.made: dict[int, str] = {}  # version -> the call that made it, for failure messages
        self.staff = spaces["staff"]["token"]
        self.baseline = {(kind, space[kind]): self.expect(200, "GET", f"{RESOURCES[kind]}/{space[kind]}/")
                         for space in spaces.values() for kind in ("route", "pool")}

    def expect(self, status: int, method: str, path: str, body=None):
        """A call of the test's own (as staff) that must succeed."""
        got, answer = self.api.call(self.staff, method, path, body)
        assert got == status, f"{method} {path} answered {got}: {short(answer)}"
        if method != "GET":
            self.made.setdefault(self.latest(), f"the test's own {method} {path}")
        return answer

    def latest(self) -> int:
        return self.shell.call("latest")["version"]

    # ---------------------------------------------------------- one example

    def run(self, example: list[Change], sync_real_node: bool) -> None:
        trail = Trail()
        try:
            accepted = [self.check(change, trail) for change in example]
            if sync_real_node and any(accepted):
                self.assert_real_node_applied_latest()
        finally:
            self.reset(trail)

    def check(self, change: Change, trail: Trail) -> bool:
        """Sends one change and checks the gate's promise; True when it was accepted."""
        before = self.latest()
        resource, body, status, answer = self.send(change, trail)
        said = f"{change.actor} {change.kind} {short(body)} -> {status} {short(answer)}"
        if 200 <= status < 300:
            self.assert_node_applies_latest(said)
            return True
        assert status in (400, 413), f"neither accepted nor refused with 400: {said}"
        if status == 400 and isinstance(body, dict):
            assert isinstance(answer, dict) and FIELDS[resource] & set(answer), \
                f"a 400 that names no field of {resource}: {said}"
        assert self.latest() == before, f"refused, yet a version was created: {said}"
        return False

    def send(self, change: Change, trail: Trail) -> tuple[str, object, int, object]:
        space = self.spaces[change.actor]
        kind, _, resource = change.kind.partition("_")
        body = change.body
        if resource == "certificate":
            body = body["spec"].body(body["name"])
        elif isinstance(body, dict) and body.get("certificate") == "created":
            body = {**body, "certificate": trail.last("certificate")}
        if kind == "patch":
            status, answer = self.api.call(space["token"], "PATCH", f"{RESOURCES[resource]}/{space[resource]}/", body)
            if 200 <= status < 300:
                trail.patched.add((resource, space[resource]))
        else:
            status, answer = self.api.call(space["token"], "POST", f"{RESOURCES[resource]}/", body)
            if status == 201:
                trail.created.append((resource, answer["id"]))
        return resource, body, status, answer

    def assert_node_applies_latest(self, said: str) -> None:
        """What a node does with the push of the latest version, in this process."""
        latest = self.shell.call("gate_materialized")
        version, digest = latest["version"], latest["hash"]
        if version == self.applied:
            return
        self.made.setdefault(version, said)
        push = schema.decode_push(schema.encode_push(version, digest, "gate", latest["snapshot"]))
        assert schema.snapshot_hash(push["snapshot"]) == digest, f"version {version} does not hash to its sha256"
        try:
            self.node_state.apply(version, digest, push["snapshot"])
        except schema.SnapshotInvalid as exc:
            errors = [e.as_dict() for e in exc.errors]
            raise AssertionError(f"the API accepted a change the node refuses (version {version}): "
                                 f"{said}\nnode errors: {errors}") from None
        not_loaded = self.node_state.tables.certs.errors
        assert not not_loaded, f"the API accepted a certificate the node cannot load: {said}\n{not_loaded}"
        self.applied = version

    def assert_real_node_applied_latest(self) -> None:
        latest = self.shell.call("latest")

        def settled():
            record = self.stack.node_record(self.node)
            if record["rejected_version"] is not None or record["applied_hash"] == latest["hash"]:
                return record
            return None
        record, _ = wait_until(settled, NODE_DEADLINE, f"node {self.node.name} to ACK version {latest['version']}",
                               interval=0.05, on_timeout=self.stack.logs)
        rejected = record["rejected_version"]
        assert rejected is None, (f"the node NACKed version {rejected}, made by "
                                  f"{self.made.get(rejected, 'a call of the test')}: {record['last_error']}")

    # ---------------------------------------------------------- back to the baseline

    def reset(self, trail: Trail) -> None:
        """Delete what the example created and put the baseline objects it changed back."""
        for resource, pk in trail.created:
            if resource == "route":
                self.expect(204, "DELETE", f"routes/{pk}/")
        for key in sorted(trail.patched):
            self.expect(200, "PUT", f"{RESOURCES[key[0]]}/{key[1]}/", self.baseline[key])
        for resource, pk in trail.created:
            if resource != "route":
                self.expect(204, "DELETE", f"{RESOURCES[resource]}/{pk}/")


@pytest.mark.timeout(120 + EXAMPLES)  # ~0.15 s per example; a soak gets the time it needs
def test_every_change_the_api_accepts_is_applied_by_a_real_node(make_stack, control_plane, report_timing,
                                                                monkeypatch):
    # After an apply the node runs a full garbage collection and freezes the heap: ~150 ms
    # in this process (pytest, Django, hypothesis), and it decides nothing about the apply.
    monkeypatch.setattr(applier, "settle_heap", lambda: None)
    stack = make_stack()
    stack.start_control_plane()
    shell = CPShell(control_plane.env, stack.root / "gateshell.log", script=GATESHELL)
    try:
        spaces = shell.call("gate_setup")
        node = stack.add_node()
        stack.wait_node_in_sync(node)
        gate = Gate(stack, shell, node, spaces)
        counter = itertools.count(1)

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(changes(spaces))
        def every_accepted_change_is_applied(example):
            gate.run(example, sync_real_node=next(counter) % SYNC_EVERY == 0)

        started = time.monotonic()
        every_accepted_change_is_applied()
        state, _ = stack.wait_node_in_sync(node, timeout=NODE_DEADLINE)
        assert state["node"]["rejected_version"] is None, state["node"]["last_error"]
        report_timing(f"[{control_plane.mode}] gate property: {EXAMPLES} examples", time.monotonic() - started)
    finally:
        shell.close()
