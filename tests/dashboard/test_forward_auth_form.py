"""Forward auth on the route form and the route page (Django test client): set, shown,
refused with the service's message on the URL field, switched off again."""
from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.audit.models import AuditEntry
from controlplane.publishing.models import ConfigVersion

from .test_access_list_pages import publish
from .test_forms import errors_of, route_post

pytestmark = pytest.mark.django_db

URL = "https://auth.example.com/api/authz/forward-auth"


def test_an_editor_sets_forward_auth_on_a_route_and_the_page_shows_it(world, login):
    c = login(world["users"]["shop-editor"])
    route = world["objs"]["shop"]["route"]
    form = c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    assert 'name="forward_auth_url"' in form and 'name="forward_auth_headers"' in form
    data = route_post(world, name=route.name, hosts="\n".join(route.hosts), forward_auth_url=URL,
                      forward_auth_headers="Remote-User, Remote-Groups", forward_auth_timeout="2.5")
    assert publish(c, reverse("dashboard:route_edit", args=[route.pk]), data).status_code == 302
    route.refresh_from_db()
    assert route.forward_auth == {"url": URL, "response_headers": ["Remote-User", "Remote-Groups"], "timeout": 2.5}
    [entry] = [r for r in ConfigVersion.objects.latest("number").snapshot["routes"] if r["id"] == route.pk]
    assert entry["forward_auth"]["url"] == URL
    assert AuditEntry.objects.filter(object_type="route", object_id=str(route.pk), note="office only").exists()
    detail = c.get(reverse("dashboard:route", args=[route.pk])).content.decode()
    assert URL in detail and "Remote-User, Remote-Groups" in detail and "timeout 2.5 s" in detail
    form = c.get(reverse("dashboard:route_edit", args=[route.pk])).content.decode()
    assert f'value="{URL}"' in form and 'value="Remote-User, Remote-Groups"' in form

    # an address the tenant's upstream policy forbids: the service's words on the URL field
    data.update(forward_auth_url="http://169.254.169.254/latest/meta-data")
    html = c.post(reverse("dashboard:route_edit", args=[route.pk]), {**data, "_action": "preview"}).content.decode()
    assert any("169.254.169.254" in m for m in errors_of(html)["forward_auth_url"])

    # an empty URL switches it off
    data.update(forward_auth_url="", forward_auth_headers="")
    assert publish(c, reverse("dashboard:route_edit", args=[route.pk]), data).status_code == 302
    route.refresh_from_db()
    assert route.forward_auth is None
    [entry] = [r for r in ConfigVersion.objects.latest("number").snapshot["routes"] if r["id"] == route.pk]
    assert "forward_auth" not in entry
    assert 'id="route-forward-auth">off' in c.get(reverse("dashboard:route", args=[route.pk])).content.decode()
