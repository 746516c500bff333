"""The route overlap check: the indexed version decides exactly what the old scan decided.

``reference_check`` is the algorithm as it was before the index (every enabled route on
the same path loaded per check). Random route sets are stored as they are (bulk, not
validated: odd hosts such as upper case, trailing dots, ports, the Kelvin sign, values
that are not strings or not lists), then random candidate routes are checked by both,
outside ``overlap_index()`` and inside it, also after saves that a savepoint rollback
undid; the messages must be the same, in the same order.
"""
from __future__ import annotations

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings, strategies as st

from controlplane.proxy import validation
from controlplane.proxy.models import Route
from controlplane.proxy.validation import Errors, match_key, normalize_hosts

from .helpers import pool, route, tenant

pytestmark = pytest.mark.django_db


def reference_check(route: Route, errors: Errors) -> None:
    """``validation._check_overlaps`` before the index (the reference)."""
    if not route.enabled:
        return
    key = match_key(route)
    others = Route.objects.filter(enabled=True, path=route.path, path_type=route.path_type).exclude(pk=route.pk)
    wanted = set(route.hosts)
    sharing = [pk for pk, hosts in others.values_list("pk", "hosts")
               if isinstance(hosts, list) and wanted.intersection(str(h).lower().rstrip(".") for h in hosts)]
    for other in Route.objects.filter(pk__in=sharing):
        if match_key(other) != key:
            continue
        for host in set(route.hosts) & set(normalize_hosts(other.hosts, Errors())):
            errors.add("hosts", validation._overlap_message(route, other, host))


def both(route: Route) -> tuple[dict, dict]:
    old, new = Errors(), Errors()
    reference_check(route, old)
    validation._check_overlaps(route, new)
    return old.by_field, new.by_field


# ------------------------------------------------------------------ random route sets

NAMES = ("a.test", "b.test", "c.d.test", "*.w.test", "x-1.test", "under_score.test")
ODD = st.sampled_from(("A.TEST", "a.test.", "B.Test..", "\u212a.test", "a.test:8080", "*.W.test", " a.test", "",
                       "c.d.test.", "a.tes"))
HOST = st.one_of(st.sampled_from(NAMES), ODD, ODD, st.integers(0, 3), st.none())
STORED_HOSTS = st.one_of(st.lists(HOST, min_size=0, max_size=3), st.sampled_from(("a.test", {"h": "a.test"}, 7)))
PATHS = st.sampled_from(("/", "/api/", "/healthz"))
TYPES = st.sampled_from(("prefix", "exact"))
METHODS = st.sampled_from(([], ["GET"], ["GET", "HEAD"], ["HEAD", "GET"]))
HEADERS = st.sampled_from(([], [{"name": "X-Canary", "value": "1"}], [{"name": "x-canary", "value": "1"}]))
ROW = st.fixed_dictionaries({"hosts": STORED_HOSTS, "path": PATHS, "path_type": TYPES, "methods": METHODS,
                             "headers": HEADERS, "enabled": st.booleans(), "owner": st.integers(0, 2)})
CANDIDATE = st.fixed_dictionaries({"hosts": st.lists(st.sampled_from(NAMES + ("k.test", "\u212a.test")), min_size=1,
                                                     max_size=3),
                                   "path": PATHS, "path_type": TYPES, "methods": METHODS, "headers": HEADERS,
                                   "enabled": st.booleans(), "owner": st.integers(0, 2),
                                   "existing": st.one_of(st.none(), st.integers(0, 999)),
                                   "like": st.one_of(st.none(), st.integers(0, 999))})


@pytest.fixture
def owners(db):
    shop = tenant("shop", "test")
    return [(None, pool("p0")), (shop, pool("p1", shop)), (shop, pool("p2", shop))]


def _store(rows: list[dict], owners) -> list[Route]:
    objs = []
    for i, row in enumerate(rows):
        owner, pool_obj = owners[row["owner"]]
        objs.append(Route(name=f"r{i}", tenant=owner, pool=pool_obj, hosts=row["hosts"], path=row["path"],
                          path_type=row["path_type"], methods=row["methods"], headers=row["headers"],
                          enabled=row["enabled"]))
    Route.objects.bulk_create(objs)
    return list(Route.objects.order_by("id"))


def _candidate(spec: dict, stored: list[Route], owners) -> Route:
    owner, pool_obj = owners[spec["owner"]]
    if spec["existing"] is not None and stored:  # an edit of a stored route
        r = Route.objects.get(pk=stored[spec["existing"] % len(stored)].pk)
    else:
        r = Route(name="candidate", tenant=owner, pool=pool_obj)
    hosts, match = spec["hosts"], (spec["path"], spec["path_type"], spec["methods"], spec["headers"])
    if spec["like"] is not None and stored:  # matched like a stored route, on its hosts: overlaps are likely
        like = stored[spec["like"] % len(stored)]
        match = (like.path, like.path_type, like.methods, like.headers)
        if isinstance(like.hosts, list):
            hosts = hosts[:1] + [h for h in like.hosts if isinstance(h, str)]
    r.hosts = normalize_hosts(hosts, Errors())
    r.path, r.path_type, r.methods, r.headers = match
    r.enabled = spec["enabled"]
    return r


class _Undo(Exception):
    pass


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(ROW, max_size=30), candidates=st.lists(CANDIDATE, min_size=1, max_size=4),
       undone=st.lists(st.tuples(st.integers(0, 29), STORED_HOSTS, PATHS, TYPES, st.booleans()), max_size=3))
def test_the_indexed_check_decides_as_the_full_scan(owners, rows, candidates, undone):
    try:
        with transaction.atomic():
            stored = _store(rows + rows[:5], owners)  # copies: several routes matched the same way
            for spec in candidates:
                r = _candidate(spec, stored, owners)
                outside = both(r)
                assert outside[0] == outside[1]
            with validation.overlap_index():
                for spec in candidates:
                    r = _candidate(spec, stored, owners)
                    old, new = both(r)
                    assert old == new
                # saves undone by a savepoint rollback: the index grew, the rows did not change
                for index, hosts, path, path_type, enabled in undone:
                    if index >= len(stored):
                        continue
                    try:
                        with transaction.atomic():
                            row = Route.objects.get(pk=stored[index].pk)
                            row.hosts, row.path, row.path_type, row.enabled = hosts, path, path_type, enabled
                            row.save()
                            probe = Route(name="probe", tenant=row.tenant, pool=row.pool, path=path,
                                          path_type=path_type, methods=row.methods, headers=row.headers,
                                          hosts=normalize_hosts([h for h in hosts if isinstance(h, str)]
                                                                if isinstance(hosts, list) else [], Errors()))
                            old, new = both(probe)  # the saved row's new hosts and path
                            assert old == new
                            for spec in candidates:
                                old, new = both(_candidate(spec, stored, owners))
                                assert old == new
                            raise _Undo
                    except _Undo:
                        pass
                for spec in candidates:
                    old, new = both(_candidate(spec, stored, owners))
                    assert old == new
            raise _Undo
    except _Undo:
        pass


# ------------------------------------------------------------------ what a user sees

def test_a_route_saved_inside_the_block_is_seen_by_the_next_check(owners):
    with transaction.atomic(), validation.overlap_index():
        first = route("first", hosts=["x.test"], pool_obj=owners[0][1])
        candidate = Route(name="second", hosts=["x.test"], pool=owners[0][1])
        errors = Errors()
        validation._check_overlaps(candidate, errors)
        assert errors.by_field == {"hosts": ["x.test / (prefix) is already matched the same way by route first"]}
        first.hosts = ["y.test"]
        first.save()  # moved away: x.test is free again, y.test is taken
        errors = Errors()
        validation._check_overlaps(candidate, errors)
        assert errors.by_field == {}
        candidate.hosts = ["y.test"]
        validation._check_overlaps(candidate, errors)
        assert errors.by_field == {"hosts": ["y.test / (prefix) is already matched the same way by route first"]}


def test_a_configuration_file_with_two_routes_on_one_host_is_refused_with_the_same_message(owners):
    from controlplane.configio import apply as applying
    from controlplane.tenancy.access import Principal

    text = ("switchyard: 1\n"
            "routes:\n"
            "- {name: one, hosts: [dup.test], pool: p0}\n"
            "- {name: two, hosts: [DUP.test.], pool: p0}\n"
            "- {name: three, hosts: [dup.test], pool: p0, path: /api/}\n")
    result = applying.apply(text, principal=Principal(staff=True))
    messages = [p.as_dict()["message"] for p in result.problems]
    assert messages == ["dup.test / (prefix) is already matched the same way by route one"], messages
    assert not Route.objects.filter(name__in=("one", "two", "three")).exists()  # nothing applied
