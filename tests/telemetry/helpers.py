"""Builders for the telemetry tests: plain ORM rows (no publishing involved)."""
from __future__ import annotations

from controlplane.proxy.models import Pool, Route, Target
from controlplane.tenancy.models import Tenant
from dataplane import schema


def world():
    """Two tenants' routes (same name "api"), one platform route, and a target."""
    shop = Tenant.objects.create(slug="shop", name="Shop")
    blog = Tenant.objects.create(slug="blog", name="Blog")
    pool = Pool.objects.create(name="web")
    target = Target.objects.create(pool=pool, host="127.0.0.1", port=9000)
    shop_api = Route.objects.create(tenant=shop, name="api", hosts=["api.shop.example.com"], pool=pool)
    blog_api = Route.objects.create(tenant=blog, name="api", hosts=["api.blog.example.com"], pool=pool)
    demo = Route.objects.create(name="demo", hosts=["demo.localhost"], pool=pool)
    return {"shop": shop, "blog": blog, "pool": pool, "target": target,
            "shop_api": shop_api, "blog_api": blog_api, "demo": demo}


def histogram(**counts_by_seconds) -> list[int]:
    """Per-bucket counts: histogram(s0_004=3) puts 3 observations of 4 ms."""
    out = [0] * schema.STATS_BUCKET_SLOTS
    for key, n in counts_by_seconds.items():
        value = float(key[1:].replace("_", "."))
        i = next((i for i, b in enumerate(schema.LATENCY_BUCKETS) if value <= b),
                 len(schema.LATENCY_BUCKETS))
        out[i] += n
    return out


def route_entry(requests=0, by_status=None, by_proxy_status=None, latency=None, upstream=None,
                bytes_in=0, bytes_out=0) -> dict:
    return {"requests": requests, "by_status": by_status or {},
            "by_proxy_status": by_proxy_status or {},
            "latency_buckets": latency or histogram(s0_004=requests),
            "upstream_latency_buckets": upstream or histogram(s0_002=requests),
            "bytes_in": bytes_in, "bytes_out": bytes_out}


def stats(routes: dict, ejections=None, interval=10.0) -> dict:
    return {"type": schema.MSG_STATS, "interval": interval,
            "routes": {str(k): v for k, v in routes.items()}, "ejections": ejections or []}
