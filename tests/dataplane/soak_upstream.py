"""A real upstream process for the soak test (tests/dataplane/test_soak.py).

``python tests/dataplane/soak_upstream.py NAME`` listens on a free loopback port, prints
``PORT <n>`` and serves until killed:

- ``GET /g``         200, body NAME
- ``GET /slow?ms=N`` the same after N ms (requests in flight across applies and drains)
- ``POST /p``        200, body ``<length> <sha256 of the request body>``
- ``GET /ws``        WebSocket: greets with ``hello NAME``, then echoes text and binary

Every HTTP response carries ``X-Upstream: NAME``.
"""
import asyncio
import hashlib
import sys

from aiohttp import WSMsgType, web


def main() -> None:
    name = sys.argv[1]

    async def g(request: web.Request) -> web.Response:
        return web.Response(text=name, headers={"X-Upstream": name})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.query.get("ms", "100")) / 1000)
        return web.Response(text=name, headers={"X-Upstream": name})

    async def p(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        return web.Response(text=f"{n} {h.hexdigest()}", headers={"X-Upstream": name})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(max_msg_size=8 * 1024 * 1024, heartbeat=None)
        await sock.prepare(request)
        await sock.send_str(f"hello {name}")
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def run() -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/g", g)
        app.router.add_get("/slow", slow)
        app.router.add_post("/p", p)
        app.router.add_get("/ws", ws)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
