"""The sync consumer hands a node's ``tls.unknown_sni`` names, checked, to the registered
hook (controlplane.acme's on-demand triage); a node that has not said hello is ignored."""
import pytest

from controlplane.publishing import sni
from dataplane import schema
from tests.controlplane.test_sync_protocol import hello, open_ws, register
from tests.support import fresh_layer, wait_until_async as wait_until  # noqa: F401 - fresh_layer is autouse

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def recorded(monkeypatch):
    got: list = []
    monkeypatch.setattr(sni, "HANDLERS", [got.append])
    return got


async def test_reported_names_reach_the_hook_checked(recorded):
    node, token = await register()
    stranger, accepted, _ = await open_ws(token)  # connected, no hello yet
    assert accepted
    await stranger.send_json_to({"type": schema.MSG_UNKNOWN_SNI, "names": ["early.apps.t1.example"]})
    comm = await hello(token, node)
    await comm.send_json_to({"type": schema.MSG_UNKNOWN_SNI,
                             "names": ["new.apps.t1.example", "BAD NAME", "new.apps.t1.example", 5]})

    async def handed():
        return recorded
    await wait_until(handed, what="names handed to the hook")
    assert recorded == [["new.apps.t1.example"]]
    await comm.disconnect()
    await stranger.disconnect()
