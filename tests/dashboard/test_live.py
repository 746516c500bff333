"""The /ws/live/ consumer: session users only, scoped per tenant, pushes changes."""
from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.test import override_settings

from controlplane.dashboard.consumers import LiveConsumer, live_state
from controlplane.proxy.models import Target
from controlplane.publishing.models import Node


def test_it_scopes_the_live_state_per_tenant(world):
    acme_target = world["objs"]["acme"]["target"]
    Target.objects.filter(pk=acme_target.pk).update(healthy=False)
    Node.objects.filter(pk=world["node"].pk).update(last_error=[{"path": "routes[0]", "message": "acme secret"}],
                                                    rejected_version=3)
    staff = live_state(world["users"]["staff"].pk)
    shop = live_state(world["users"]["shop-viewer"].pk)
    assert staff["values"]["unhealthy_count"] == 1 and staff["health"]["unhealthy"] == [acme_target.pk]
    assert shop["values"]["unhealthy_count"] == 0 and shop["health"]["unhealthy"] == []
    assert staff["nodes"][0]["last_error"][0]["message"] == "acme secret"
    assert "last_error" not in shop["nodes"][0] and shop["nodes"][0]["name"] == "edge-1"


@pytest.mark.django_db(transaction=True)
@override_settings(SWITCHYARD_LIVE_POLL_SECONDS=0.2)
async def test_it_pushes_node_and_health_changes(world):
    user = world["users"]["shop-viewer"]
    comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    comm.scope["user"] = user
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_json_from(timeout=5)
    assert first["type"] == "state" and first["nodes"][0]["connected"] is False
    await sync_to_async(Node.objects.filter(pk=world["node"].pk).update)(connected=True)
    second = await comm.receive_json_from(timeout=5)
    assert second["nodes"][0]["connected"] is True and second["values"]["nodes_connected"] == 1
    shop_target = world["objs"]["shop"]["target"]
    await sync_to_async(Target.objects.filter(pk=shop_target.pk).update)(healthy=False)
    third = await comm.receive_json_from(timeout=5)
    assert third["health"]["unhealthy"] == [shop_target.pk]
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_it_refuses_anonymous_connections():
    comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    comm.scope["user"] = AnonymousUser()
    connected, _ = await comm.connect()
    assert not connected
    await asyncio.sleep(0)
