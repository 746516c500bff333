"""Platform error pages through the Django admin: the same service (validation, version,
audit) as the API and the dashboard."""
import pytest
from django.contrib.auth import get_user_model

from controlplane.audit.models import AuditEntry
from controlplane.proxy.models import ErrorPage
from controlplane.publishing.models import ConfigVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-123456"))
    return client


def test_the_admin_saves_a_platform_page_through_the_service(staff):
    count = ConfigVersion.objects.count()
    resp = staff.post("/admin/proxy/errorpage/add/", {"status": "503", "body": "<p>{{request_id}}</p>",
                                                      "change_note": "via admin"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    assert ConfigVersion.objects.count() == count + 1
    assert ConfigVersion.objects.latest("number").snapshot["error_pages"] == {"503": "<p>{{request_id}}</p>"}
    entry = AuditEntry.objects.get(object_type="errorpage")
    assert (entry.actor, entry.action, entry.note) == ("root", "create", "via admin")
    page = ErrorPage.objects.get()
    resp = staff.post(f"/admin/proxy/errorpage/{page.pk}/change/", {"body": "<p>{{nope}}</p>", "change_note": ""})
    assert resp.status_code == 200 and "unknown placeholder {{nope}}" in resp.content.decode()
    assert ErrorPage.objects.get().body == "<p>{{request_id}}</p>"
