"""A tenant pool never reaches the node's own listeners nor its control plane,
even when the tenant's allowed_networks cover their addresses (checked on connect)."""
from tests.dataplane.helpers import Backend, NodeProcess, get, pool, route, snapshot
from tests.support import free_port

LOOPBACK_ALLOWED = {"restricted": True, "allowed_networks": ["127.0.0.0/8"]}


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


async def test_workers_keep_tenant_pools_off_the_admin_and_control_plane(tmp_path):
    """With --workers, every worker knows the supervisor's real admin address and the
    control plane's, though only the supervisor talks to either."""
    control_plane = await Backend().start()
    admin = free_port()
    snap = snapshot(
        [pool(1, [(1, "127.0.0.1", admin)], tenant="acme", policy=LOOPBACK_ALLOWED),
         pool(2, [(2, "127.0.0.1", control_plane.port)], tenant="acme", policy=LOOPBACK_ALLOWED)],
        [route(1, ["admin.test"], 1, tenant="acme"), route(2, ["cp.test"], 2, tenant="acme")])
    node = NodeProcess(tmp_path, snap, "--workers", "2", "--admin", f"127.0.0.1:{admin}",
                       "--control-plane", f"ws://127.0.0.1:{control_plane.port}/ws/dataplane/")
    try:
        await node.ready(timeout=30)
        for host in ("admin.test", "cp.test"):
            for _ in range(4):  # connections land on either worker
                r = await get(node.port, host=host)
                assert r.status == 502, (host, r.status)
                assert "destination_ip_prohibited" in r.one("Proxy-Status")
    finally:
        node.stop()
        await control_plane.close()
