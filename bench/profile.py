"""Where a Switchyard worker's time goes under the small keep-alive load (``profile``
section of ``python -m bench``).

The user/system split of the CPU time comes from /proc (section_profile measures it
without the profiler attached). Inside user space, py-spy samples the pinned 1-worker
node (Python and native frames) while wrk runs the same load; each sample goes into one
bucket by its innermost frames: the llhttp parser, uvloop/libuv machinery, and
otherwise the innermost Switchyard function (interpreter work such as reference
counting or allocation is charged to the Python function it runs for).
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

SYSCALLS = {"read", "write", "writev", "readv", "recv", "send", "sendmsg", "recvmsg",
            "recvfrom", "sendto", "__libc_read", "__libc_write"}
WAITS = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}
FRAME = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*)\)$")


def py_spy() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


def record(pid: int, seconds: int, out: Path, rate: int = 500) -> subprocess.Popen:
    """Start py-spy on ``pid`` (raw collapsed stacks, native frames included)."""
    return subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", str(rate), "--native", "--format", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def bucket(frames: list[str]) -> tuple[str, str]:
    """(category, detail) of one sample, by its innermost frames."""
    leaf = FRAME.match(frames[-1])
    func, where = (leaf["func"], leaf["where"]) if leaf else (frames[-1], "")
    if func in WAITS:
        return "waiting in epoll (idle)", ""
    if func in SYSCALLS and "libc" in where:
        return "socket system calls (kernel TCP, loopback)", func
    for f in reversed(frames):
        m = FRAME.match(f)
        if not m:
            continue
        w = m["where"]
        if w.startswith("llhttp") or w.startswith("api.c") or w.startswith("http.c"):
            return "llhttp parser (C)", ""
        if "/dataplane/" in w or w.startswith("dataplane/"):
            mod = w.rsplit("/", 1)[-1].split(":", 1)[0]
            return "Switchyard Python code", f"{mod}:{m['func']}"
        if w.startswith(("loop.c", "core.c", "stream.c", "linux.c", "uv-common.c", "tcp.c",
                         "handles", "timer.c")):
            return "uvloop / libuv event loop", ""
    return "other (interpreter, libc)", func


def summarize(raw: Path, top: int = 14) -> dict:
    """Shares of the user-space samples (system calls and the idle wait left out: the
    /proc user/system split measures those; py-spy's stop-and-sample over-weights time
    spent in system calls)."""
    cats: collections.Counter = collections.Counter()
    funcs: collections.Counter = collections.Counter()
    total = kernel = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        total += n
        cat, detail = bucket(stack.split(";"))
        if cat.startswith(("socket", "waiting")):
            kernel += n
            continue
        cats[cat] += n
        if cat == "Switchyard Python code":
            funcs[detail] += n
    user = total - kernel
    pct = (lambda c: round(100.0 * c / user, 1)) if user else (lambda c: 0.0)
    return {"samples": total, "user_space_samples": user,
            "categories": {k: pct(v) for k, v in cats.most_common()},
            "python_functions": {k: pct(v) for k, v in funcs.most_common(top)}}


def print_summary(summary: dict, log) -> None:
    log(f"   user-space samples ({summary['user_space_samples']} of {summary['samples']}; "
        f"system calls and the idle wait left out), by where they run:")
    for name, p in summary["categories"].items():
        log(f"   {p:5.1f}%  {name}")
    log("   Switchyard functions (own time, interpreter work included; % of user-space samples):")
    for name, p in summary["python_functions"].items():
        log(f"   {p:5.1f}%  {name}")
