"""SPEC 7: a tenant pool never reaches the node's own listeners nor its control plane,
even when the tenant's allowed_networks cover their addresses (checked on connect)."""
import socket

from tests.dataplane.helpers import Backend, NodeProcess, get, pool, route, snapshot

LOOPBACK_ALLOWED = {"restricted": True, "allowed_networks": ["127.0.0.0/8"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_tenant_pools_cannot_reach_the_node_admin_or_control_plane(tmp_path):
    control_plane = await Backend().start()   # stands in for the control plane's port
    admin = free_port()
    snap = snapshot(
        [pool(1, [(1, "127.0.0.1", admin)], tenant="acme", policy=LOOPBACK_ALLOWED),
         pool(2, [(2, "127.0.0.1", control_plane.port)], tenant="acme", policy=LOOPBACK_ALLOWED),
         pool(3, [(3, "127.0.0.1", control_plane.port)])],
        [route(1, ["admin.test"], 1, tenant="acme"), route(2, ["cp.test"], 2, tenant="acme"),
         route(3, ["platform.test"], 3)])
    node = NodeProcess(tmp_path, snap, "--admin", f"127.0.0.1:{admin}",
                       "--control-plane", f"ws://127.0.0.1:{control_plane.port}/ws/dataplane/")
    try:
        await node.ready()
        for host in ("admin.test", "cp.test"):
            r = await get(node.port, host=host)
            assert r.status == 502, (host, r.status)
            assert "destination_ip_prohibited" in r.one("Proxy-Status")
        assert (await get(node.port, host="platform.test")).status == 200  # platform pools may
    finally:
        node.stop()
        await control_plane.close()
