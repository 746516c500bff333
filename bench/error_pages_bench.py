"""The cost of one generated response (dataplane.errorpages.render), in microseconds:
the plain-text body as before error pages, the built-in HTML page, a 2 KiB custom page
with placeholders, and JSON — all prebuilt at apply time, joined per response.

    .venv/bin/python -m bench.error_pages_bench [--number 200000]

In-process and single-threaded (no sockets): it isolates what error pages add to a
generated response. Timings are the best of 5 rounds; a loaded machine inflates them.
"""
from __future__ import annotations

import argparse
import timeit

from dataplane import errorpages, errors

RID = b"3f2a9c1e7b4d4e0f9a8b7c6d5e4f3a2b"
PAGE = ("<!doctype html><html><head><title>{{status}} {{reason}}</title><style>"
        + "body{font-family:sans-serif;margin:4rem auto;max-width:36rem}" * 20
        + "</style></head><body><h1>{{status}} {{reason}}</h1><p>{{details}} ({{error}})</p>"
        + "<p>Quote {{request_id}} when you write to us.</p>" + "<!-- padding -->" * 40 + "</body></html>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    custom = errorpages.build(errorpages.compile_pages({502: PAGE}))
    html = [(b"accept", b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8")]
    curl = [(b"user-agent", b"User-Agent", b"curl/8.5")]
    api = [(b"accept", b"Accept", b"application/json")]
    cases = {
        "text (errors.render, before error pages)": lambda: errors.render("connection_refused", RID, False),
        "text via errorpages.render (curl)": lambda: errorpages.render(
            errorpages.DEFAULT, "connection_refused", None, RID, False, False, False, curl),
        "built-in HTML page (browser)": lambda: errorpages.render(
            errorpages.DEFAULT, "connection_refused", None, RID, False, False, False, html),
        f"custom page, {len(PAGE.encode())} bytes (browser)": lambda: errorpages.render(
            custom, "connection_refused", None, RID, False, False, False, html),
        "JSON (Accept: application/json)": lambda: errorpages.render(
            custom, "connection_refused", None, RID, False, False, False, api),
    }
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=args.number, repeat=5)) / args.number
        print(f"{name:48s} {best * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
