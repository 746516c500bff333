"""`python -m dataplane --workers 2`: both processes serve, config reaches both, drain."""
import asyncio
import json
import os
import signal
import urllib.request

import pytest

from tests.dataplane.helpers import Backend, NodeProcess, get, pool, route, snapshot, wait_for


def pids_by_host(node):
    path = node.tmp / "access.log"
    out: dict[str, set] = {}
    statuses: dict[str, list] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            d = json.loads(line)
            out.setdefault(d["host"], set()).add(d["pid"])
            statuses.setdefault(d["host"], []).append(d["status"])
    return out, statuses


async def serve_until_both(node, host, n_workers=2, timeout=20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for _ in range(10):
            res = await get(node.port, host=host)  # a new connection each time
            assert res.status == 200, (host, res.status)
        pids, _ = pids_by_host(node)
        if len(pids.get(host, ())) >= n_workers:
            return pids[host]
        assert loop.time() < deadline, f"only pids {pids.get(host)} served {host}"
        await asyncio.sleep(0.05)


async def test_two_workers_serve_apply_and_drain(tmp_path):
    release = asyncio.Event()

    async def respond(req, w):
        if req.url == b"/slow":
            await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
    b = await Backend(respond).start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", b.port)])], [route(1, ["app.test"], 1)])
    node = await NodeProcess(tmp_path, snap, "--workers", "2").ready(timeout=30)
    try:
        err = node.stderr()
        assert "workers=2" in err
        worker_pids = {int(p) for p in err.split("pids=")[1].split()[0].split(",")}
        assert len(worker_pids) == 2 and node.proc.pid not in worker_pids
        assert await serve_until_both(node, "app.test") == worker_pids
        for pid in worker_pids:  # the admin listener's libraries stay in the supervisor
            maps = open(f"/proc/{pid}/maps").read()
            assert "/aiohttp/" not in maps and "/multidict/" not in maps, pid
        with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics") as r:
            assert b"switchyard_requests_total" in r.read()  # served by the supervisor

        # a config change (SIGHUP reloads the file in the supervisor) reaches both workers
        (tmp_path / "snapshot.json").write_text(json.dumps(
            snapshot([pool(1, [(1, "127.0.0.1", b.port)])],
                     [route(1, ["other.test"], 1)])))
        node.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: "on 2 workers" in node.stderr(), 15, "apply on both workers")
        assert await serve_until_both(node, "other.test") == worker_pids
        assert (await get(node.port, host="app.test")).status == 404

        # the supervisor's /metrics sums both workers
        def total():
            with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics") as r:
                text = r.read().decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("switchyard_requests_total{"))
        loop = asyncio.get_running_loop()
        _, statuses = pids_by_host(node)
        served = sum(len(v) for v in statuses.values())
        deadline = loop.time() + 10
        while await loop.run_in_executor(None, total) < served:
            assert loop.time() < deadline, "metrics never summed the workers"
            await asyncio.sleep(0.1)

        # SIGTERM to the supervisor drains an in-flight request on a worker
        r, w = await asyncio.open_connection("127.0.0.1", node.port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: other.test\r\n\r\n")
        await wait_for(lambda: any(x.url == b"/slow" for x in b.requests), what="slow request")
        node.proc.send_signal(signal.SIGTERM)

        async def refused():
            try:
                _, w2 = await asyncio.open_connection("127.0.0.1", node.port)
                w2.close()
                return False
            except OSError:
                return True
        deadline = loop.time() + 10
        while not await refused():
            assert loop.time() < deadline, "still accepting"
            await asyncio.sleep(0.05)
        assert node.proc.poll() is None  # still draining
        release.set()
        data = await asyncio.wait_for(r.read(), 10)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"done")
        assert await loop.run_in_executor(None, node.proc.wait, 15) == 0
    finally:
        node.stop()
        await b.close()


def _allowed_cpus(pid: int) -> str:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return ""


async def test_worker_cpu_affinity_auto_pins_one_worker_per_cpu(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    b = await Backend().start()
    snap = snapshot([pool(1, [(1, "127.0.0.1", b.port)])], [route(1, ["app.test"], 1)])
    node = await NodeProcess(tmp_path, snap, "--workers", "2",
                             "--worker-cpu-affinity", "auto").ready(timeout=30)
    try:
        err = node.stderr()
        worker_pids = [int(p) for p in err.split("pids=")[1].split()[0].split(",")]
        assert sorted(_allowed_cpus(p) for p in worker_pids) == [str(cpus[0]), str(cpus[1])]
        assert _allowed_cpus(node.proc.pid) != _allowed_cpus(worker_pids[0])  # supervisor free
        assert await serve_until_both(node, "app.test") == set(worker_pids)
    finally:
        node.stop()
        await b.close()
