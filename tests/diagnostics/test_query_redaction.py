"""Captures and tail lines never carry query parameter values (tokens, signatures,
OAuth codes): names stay, every value becomes [redacted]."""
import json

from dataplane import schema
from dataplane.diagnostics import HUB
from tests.dataplane.helpers import get
from tests.diagnostics.test_dataplane import clean_hub, proxy, start  # noqa: F401

SECRET_PATH = "/cb?code=oauth-s3cret&state=st4te&flag"


async def test_capture_redacts_query_values_on_both_sides(proxy):
    b, p = await proxy()
    start(schema.MSG_CAPTURE_START, "c", route=1, count=1)
    start(schema.MSG_TAIL_START, "t", filter={"routes": [1]})
    await get(p.port, host="app.test", path=SECRET_PATH,
              headers=[("Referer", "https://app.test/login?token=r3f3rer")])
    out = HUB.drain()
    rec = next(m["record"] for m in out if m["type"] == schema.MSG_CAPTURE_RECORD)
    text = json.dumps(out)
    assert "oauth-s3cret" not in text and "st4te" not in text and "r3f3rer" not in text
    assert rec["client_request"]["line"] == "GET /cb?code=[redacted]&state=[redacted]&[redacted] HTTP/1.1"
    assert rec["upstream_request"]["line"] == "GET /cb?code=[redacted]&state=[redacted]&[redacted] HTTP/1.1"
    assert dict(rec["client_request"]["headers"])["Referer"] == "https://app.test/login?token=[redacted]"
    (line,) = next(m for m in out if m["type"] == schema.MSG_TAIL_LINES)["lines"]
    assert line["path"] == "/cb"
