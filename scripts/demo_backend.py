"""The demo backend started by `make run` (Procfile `demo`).

A tiny aiohttp server that answers every request with a greeting and what the
proxy sent it (Host, X-Forwarded-*, X-Request-ID, Via), so people can see the
proxy at work:  curl -H 'Host: demo.localhost' http://127.0.0.1:8080/
Add ``?format=json`` (or ``Accept: application/json``) for a JSON answer.

It imports nothing from Switchyard and runs with only aiohttp installed.
"""
from __future__ import annotations

import argparse
import os

from aiohttp import web

GREETING = "Hello from the Switchyard demo backend"
SHOWN_HEADERS = ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                 "X-Forwarded-Port", "X-Real-IP", "Forwarded", "X-Request-ID", "Via", "User-Agent")


async def handle(request: web.Request) -> web.Response:
    headers = {name: request.headers[name] for name in SHOWN_HEADERS if name in request.headers}
    info = {
        "message": GREETING,
        "name": request.app["name"],
        "method": request.method,
        "path": request.path_qs,
        "peer": request.remote,
        "headers": headers,
    }
    if request.query.get("format") == "json" or "application/json" in request.headers.get("Accept", ""):
        return web.json_response(info)
    lines = [f"{GREETING} ({info['name']})", "", f"{request.method} {request.path_qs}",
             f"peer: {request.remote}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return web.Response(text="\n".join(lines) + "\n")


def make_app(name: str = "demo") -> web.Application:
    app = web.Application()
    app["name"] = name
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default=os.environ.get("SWITCHYARD_DEMO_BIND", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SWITCHYARD_DEMO_PORT", "8081")))
    parser.add_argument("--name", default="demo", help="shown in every answer (tells backends apart)")
    args = parser.parse_args(argv)
    web.run_app(make_app(args.name), host=args.bind, port=args.port, access_log=None,
                print=lambda *a: print(f"demo backend listening on http://{args.bind}:{args.port}/", flush=True))


if __name__ == "__main__":
    main()
