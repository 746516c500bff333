"""The `ready` process of `make run`: waits until the dashboard answers and the node is
ready and serves, then prints one line saying where everything is and how to sign in.

It then stays up doing nothing (honcho stops the whole stack when any process exits)
until Ctrl-C. While something is not up yet it says what, every 30 s.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
import urllib.error
import urllib.request

REMIND_EVERY = 30.0


def answers(url: str, host: str | None = None) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def waiting_for(args) -> list[str]:
    """What is not up yet, in words (empty when everything is)."""
    missing = []
    if answers(args.dashboard + "login/") != 200:
        missing.append(f"the dashboard ({args.dashboard})")
    if answers(args.node_ready) != 200:
        missing.append(f"the node ({args.node_ready})")
    return missing


def demo_served(args, wait: float = 10.0) -> bool:
    """The demo route answers through the node (it is absent after ``bootstrap --no-demo``)."""
    deadline = time.monotonic() + wait
    while args.demo_host and time.monotonic() < deadline:
        if answers(args.proxy, host=args.demo_host) == 200:
            return True
        time.sleep(0.5)
    return False


def ready_line(args, demo: bool) -> str:
    line = (f"Switchyard is ready: dashboard {args.dashboard} (sign in as admin with the password bootstrap "
            f"printed above, or SWITCHYARD_ADMIN_PASSWORD), proxy {args.proxy}")
    if demo:
        line += f" (try: curl -H 'Host: {args.demo_host}' {args.proxy})"
    return line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", required=True, help="dashboard base URL, ending in /")
    parser.add_argument("--proxy", required=True, help="the node's HTTP URL, ending in /")
    parser.add_argument("--node-ready", required=True, help="the node's /readyz URL")
    parser.add_argument("--demo-host", default="demo.localhost", help="a host the proxy should serve ('' = none)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = last_said = time.monotonic()
    try:
        while missing := waiting_for(args):
            if time.monotonic() - last_said >= REMIND_EVERY:
                print(f"not ready after {time.monotonic() - started:.0f} s: waiting for {', '.join(missing)}",
                      flush=True)
                last_said = time.monotonic()
            time.sleep(0.5)
        print(ready_line(args, demo_served(args)), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
