"""Admin listener: /healthz, /readyz and /metrics (Prometheus text)."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from dataplane import exposition


def make_app(state: Any) -> web.Application:
    registry = exposition.registry(state.metrics)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if state.ready:
            return web.Response(text=f"ready version={state.version} hash={state.hash}\n")
        return web.Response(status=503, text="no configuration loaded\n")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition.render(registry),
                            headers={"Content-Type": exposition.CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start(state: Any, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the admin listener; returns the runner and the bound port."""
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner, runner.addresses[0][1]
