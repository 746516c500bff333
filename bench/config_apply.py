"""Publishing a large configuration, and a node applying it: times at 100 / 1,000 / 5,000 routes.

A realistic configuration file (``config/apply``'s format) is generated for each size:
tenants with two delegations each, a pool and a certificate per tenant, a few access
lists, platform routes under a platform wildcard certificate, routes with several
hosts, wildcard hosts, hosts shared by routes on different paths, most routes on the
same path (``/``, the case that made the overlap check quadratic), some exact paths
with methods. Each size runs in a fresh control plane process (its own var dir and
SQLite database, or a fresh PostgreSQL database with ``--db postgres``), which times:

- ``publish``: ``controlplane.configio.apply.apply`` of the whole file (what
  ``POST /api/v1/config/apply`` runs: every object through the service layer, its
  validation, then one publish: compile, the gate, one version); ``of it CPU``: the
  CPU time of this process meanwhile (the database's own work included with SQLite,
  not with PostgreSQL), the figure a busy machine disturbs least;
- ``re-apply``: the same file again (nothing changes, nothing is published);
- ``1 change``: one route edit through ``controlplane.proxy.services.update_route``
  (validation and a publish of the whole config), the median of 3;
- ``compile`` / ``gate``: ``compiler.compile_snapshot()`` and ``gate.check_snapshot()``
  alone (medians of 3);
- ``node apply`` / ``re-apply``: ``dataplane.applier.NodeState.apply`` of the published
  snapshot (private keys filled in, as a push carries it) in a Django-free process on a
  fresh node state (median of 3), then on a node already running it.

    .venv/bin/python bench/config_apply.py                       # 100,1000,5000 on SQLite
    .venv/bin/python bench/config_apply.py --sizes 1000 --db postgres
    .venv/bin/python bench/config_apply.py --sizes 1000 --profile 25   # + cProfile of the publish

Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PY = sys.executable
PASSPHRASE = b"bench passphrase"  # the file's private keys are encrypted with it, as an export's
PUBLIC_IPS = ("93.184.216.34", "93.184.216.35")  # global addresses: allowed for tenant targets
SCRUB = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")


# ----------------------------------------------------------------------------- the file

def _issue(*names: str) -> tuple[str, str]:
    """A certificate for ``names`` from one throwaway CA: (chain PEM, key PEM)."""
    import trustme

    from controlplane.configio import keys

    global _CA
    if _CA is None:
        _CA = trustme.CA()
    leaf = _CA.issue_cert(*names)
    return ("".join(p.bytes().decode() for p in leaf.cert_chain_pems),
            keys.encrypt(leaf.private_key_pem.bytes().decode(), PASSPHRASE))


_CA = None


def config(size: int, certificates: bool = True) -> dict:
    """The configuration file (as data) with ``size`` routes."""
    n_tenants = max(2, size // 50)
    tenants, pools, certs, acls, routes = [], [], [], [], []
    for k in range(n_tenants):
        slug = f"t{k:03d}"
        tenants.append({"slug": slug, "name": f"Tenant {k}", "delegations": [f"{slug}.example.com",
                                                                            f"{slug}.example.net"],
                        "quotas": {"routes": size, "pools": 10, "targets": 100, "certificates": 10}})
        pools.append({"tenant": slug, "name": "web", "targets": [{"host": ip, "port": 8080} for ip in PUBLIC_IPS]})
        if k % 5 == 0:
            acls.append({"tenant": slug, "name": "office", "default": "deny",
                         "rules": [{"action": "allow", "cidr": f"10.{k % 250}.0.0/16"},
                                   {"action": "allow", "cidr": "2001:db8::/32"}]})
    for p in range(5):
        pools.append({"name": f"platform-{p}", "targets": [{"host": "127.0.0.1", "port": 9000 + p}]})
    acls.append({"name": "ops", "default": "allow", "rules": [{"action": "deny", "cidr": "192.0.2.0/24"}]})
    if certificates:
        pem, key = _issue("example.org", "*.example.org")
        certs.append({"name": "platform-wildcard", "certificate_pem": pem, "private_key_pem": key})
        for k in range(0, n_tenants, 4):
            slug = f"t{k:03d}"
            pem, key = _issue(f"{slug}.example.com", f"*.{slug}.example.com")
            certs.append({"tenant": slug, "name": "wildcard", "certificate_pem": pem, "private_key_pem": key})
    for i in range(size):
        h = i // 2  # two routes per host: "/" and "/api/"
        platform = i % 4 == 0
        slug = None if platform else f"t{(h % n_tenants):03d}"
        suffix = "example.org" if platform else f"{slug}.example.{'com' if h % 3 else 'net'}"
        hosts = [f"*.w{h}.{suffix}"] if h % 10 == 3 else [f"a{h}.{suffix}"]
        if h % 7 == 1:
            hosts.append(f"b{h}.{suffix}")
        route = {"tenant": slug, "name": f"r{i:05d}", "hosts": hosts,
                 "pool": f"platform-{h % 5}" if platform else "web"}
        if i % 2:
            route["path"] = "/api/"
        if i % 20 == 9:
            route.update(path="/healthz", path_type="exact", methods=["GET", "HEAD"])
        if i % 8 == 5:
            route["headers"] = [{"name": "X-Canary", "value": "1"}]
        if i % 25 == 0:
            route["access_list"] = "ops" if platform else ("office" if (h % n_tenants) % 5 == 0 else None)
        routes.append(route)
    return {"switchyard": 1, "tenants": tenants, "certificates": certs, "access_lists": acls, "pools": pools,
            "routes": routes}


# ----------------------------------------------------------------------------- child: one size

def _median(values: list[float]) -> float:
    return statistics.median(values)


def child(args) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from controlplane.configio import apply as applying, document
    from controlplane.proxy import services
    from controlplane.proxy.models import Route
    from controlplane.publishing import compiler, gate
    from controlplane.publishing.models import ConfigVersion
    from controlplane.tenancy.access import Principal
    from dataplane import schema

    staff = Principal(staff=True)
    text = document.dump(config(args.size, certificates=not args.no_certificates))
    out: dict = {"routes": args.size}
    profiler = None
    if args.profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    result = applying.apply(text, principal=staff, note="bench", passphrase=PASSPHRASE)
    out["publish_s"], out["publish_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    if profiler is not None:
        import io
        import pstats
        profiler.disable()
        buf = io.StringIO()
        for order in ("cumulative", "tottime"):
            pstats.Stats(profiler, stream=buf).sort_stats(order).print_stats(args.profile)
        print(buf.getvalue(), file=sys.stderr)
    if not result.ok:
        raise SystemExit(f"the apply was refused: {[p.as_dict() for p in result.problems[:5]]}")
    version = ConfigVersion.objects.order_by("-number").first()
    assert len(version.snapshot["routes"]) == args.size, len(version.snapshot["routes"])
    t0 = time.perf_counter()
    again = applying.apply(text, principal=staff, passphrase=PASSPHRASE)
    out["reapply_s"] = time.perf_counter() - t0
    assert again.ok and not again.changes, again.as_dict()["summary"]
    change = []
    route = Route.objects.get(tenant=None, name="r00000")
    for n in range(3):
        t0 = time.perf_counter()
        route = services.update_route(services.Actor.system(), route, note="bench", priority=n + 1)
        change.append(time.perf_counter() - t0)
    out["change_s"] = _median(change)
    compile_s, gate_s = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        snap = compiler.compile_snapshot()
        t1 = time.perf_counter()
        gate.check_snapshot(snap)
        t2 = time.perf_counter()
        compile_s.append(t1 - t0)
        gate_s.append(t2 - t1)
    out["compile_s"], out["gate_s"] = _median(compile_s), _median(gate_s)
    out["certificates"] = len(snap["certificates"])
    material = compiler.materialize(snap)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump({"version": 1, "hash": schema.snapshot_hash(snap), "snapshot": material}, f)
        f.flush()
        res = subprocess.run([PY, "-m", "bench.cpbench", "apply", "--snapshot", f.name, "--repeat", "3"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
    node = json.loads(res.stdout.strip().splitlines()[-1])
    out["node_apply_s"], out["node_reapply_s"] = node["apply_ms"] / 1e3, node["reapply_ms"] / 1e3
    return out


# ----------------------------------------------------------------------------- parent

class PostgresDB:
    """A fresh database on the local PostgreSQL, dropped at the end."""

    def __init__(self, admin_url: str):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.admin_url = admin_url
        self.name = "switchyard_cfgbench_" + secrets.token_hex(5)
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.name}"')
        p = conninfo_to_dict(admin_url)
        auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
        self.url = f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{self.name}"

    def drop(self) -> None:
        import psycopg
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def run_size(size: int, db: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="switchyard-cfgbench-") as var:
        env = {k: v for k, v in os.environ.items() if k not in SCRUB and not k.startswith("SWITCHYARD_")}
        env.update({"DJANGO_SETTINGS_MODULE": "controlplane.settings", "SWITCHYARD_VAR_DIR": var,
                    "SECRET_KEY": "bench-" + secrets.token_urlsafe(24), "DEBUG": "0", "LOG_LEVEL": "WARNING",
                    "SWITCHYARD_ENCRYPTION_KEY": "bench-" + secrets.token_urlsafe(24),
                    "PYTHONPATH": str(ROOT)})
        pg = None
        if db == "postgres":
            pg = PostgresDB(os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
            env["DATABASE_URL"] = pg.url
        # as a module: bench/ on sys.path would hide the standard library's ``profile``
        argv = [PY, "-m", "bench.config_apply", "--child", "--size", str(size)]
        if args.profile:
            argv += ["--profile", str(args.profile)]
        if args.no_certificates:
            argv.append("--no-certificates")
        try:
            res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
        finally:
            if pg is not None:
                pg.drop()
    if args.profile:
        print(res.stderr, file=sys.stderr)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"size {size} on {db} failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                           f"{res.stderr[-4000:]}") from None


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--db", default="sqlite", help="sqlite, postgres or both (comma separated)")
    ap.add_argument("--profile", type=int, default=0, help="print the N top functions (cumulative) of the publish")
    ap.add_argument("--no-certificates", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    results = []
    cols = ("publish_s", "publish_cpu_s", "reapply_s", "change_s", "compile_s", "gate_s", "node_apply_s",
            "node_reapply_s")
    heads = ("publish", "of it CPU", "re-apply", "1 change", "compile", "gate", "node apply", "re-apply")
    print(f"{'db':<9}{'routes':>7}" + "".join(f"{h:>12}" for h in heads), flush=True)
    for db in args.db.replace("both", "sqlite,postgres").split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            r = run_size(size, db, args)
            r["db"] = db
            results.append(r)
            print(f"{db:<9}{size:>7}" + "".join(f"{fmt_s(r[c]):>12}" for c in cols), flush=True)
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
