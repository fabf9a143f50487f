"""Dashboard: served on the reserved host through mitmproxy flows and on a local port; read-only, token, XSS."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from llmwall.analytics.dashboard import COOKIE, Dashboard
from llmwall.analytics.metrics import Metrics
from llmwall.analytics.store import Store

XSS_PATH = "/v1/<img src=x onerror=window.__xss=1>/chat"
CHROMIUM = "/usr/bin/chromium"


def event(ts: float, **kw: object) -> dict:
    base = {
        "ts": ts,
        "host": "api.openai.com",
        "method": "POST",
        "path_template": "/v1/chat/completions",
        "format": "openai.chat",
        "model": "gpt-4o-mini",
        "action": None,
        "rule": None,
        "matched": [],
        "fields": {"cf.llm.prompt.token_count": 9},
        "timings_ms": {"pii": 2.5},
        "not_scored": [],
        "errors": [],
        "total_ms": 3.0,
        "status": "screened",
    }
    base.update(kw)
    return base


@pytest.fixture
def dash(tmp_path: Path) -> Iterator[Dashboard]:
    store = Store(tmp_path / "d.sqlite")
    metrics = Metrics()
    now = time.time()
    evs = [
        event(
            now - 30,
            action="block",
            rule="block-pii",
            matched=["block-pii"],
            fields={"cf.llm.prompt.pii_detected": True, "cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]},
        ),
        event(now - 20),
        event(
            now - 10,
            host="evil.example",
            path_template=XSS_PATH,
            action="log",
            rule="log-all",
            matched=["log-all"],
            not_scored=["llama_guard"],
        ),
    ]
    for e in evs:
        store.record_event(e)
        metrics.observe(e)
        store.upsert_endpoint(e["host"], "POST", e["path_template"], "openai.chat", e["ts"])
    d = Dashboard(store, metrics)
    yield d
    d.stop_server()
    store.close()


def serve(
    d: Dashboard, path: str, method: str = "GET", host: str = "llmwall.localhost", headers: dict[str, str] | None = None
) -> http.HTTPFlow:
    hdrs = http.Headers(host=host, **(headers or {}))
    f = tflow.tflow(
        req=tutils.treq(method=method.encode(), host=host, port=80, path=path.encode(), headers=hdrs, content=b"")
    )
    assert d.maybe_serve(f) is True
    assert f.response is not None
    return f


def api(d: Dashboard, path: str) -> dict:
    f = serve(d, path)
    assert f.response.status_code == 200, f.response.text
    assert f.response.headers["content-type"] == "application/json"
    return json.loads(f.response.content)


def test_other_hosts_are_not_touched(dash: Dashboard) -> None:
    f = tflow.tflow(req=tutils.treq(host="api.openai.com", headers=http.Headers(host="api.openai.com")))
    assert dash.maybe_serve(f) is False
    assert f.response is None


def test_async_variant_serves_off_the_loop(dash: Dashboard) -> None:
    f = tflow.tflow(
        req=tutils.treq(
            host="llmwall.localhost",
            port=80,
            path=b"/api/endpoints",
            headers=http.Headers(host="llmwall.localhost"),
            content=b"",
        )
    )
    assert asyncio.run(dash.maybe_serve_async(f)) is True
    assert f.response is not None and len(json.loads(f.response.content)["endpoints"]) == 2
    other = tflow.tflow(req=tutils.treq(host="x.example", headers=http.Headers(host="x.example")))
    assert asyncio.run(dash.maybe_serve_async(other)) is False and other.response is None


def test_pages_static_and_host_with_port(dash: Dashboard) -> None:
    f = serve(dash, "/", host="llmwall.localhost:8080")
    assert f.response.status_code == 200 and b'<canvas id="chart-action"' in f.response.content
    csp = f.response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert f.response.headers["x-content-type-options"] == "nosniff"
    f = serve(dash, "/event/1")
    assert f.response.status_code == 200 and b"event.js" in f.response.content
    js = serve(dash, "/static/chart.umd.min.js").response
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert b"Chart.js v4" in js.content[:200]
    assert serve(dash, "/static/../store.py").response.status_code == 404
    assert serve(dash, "/static/%2e%2e/store.py").response.status_code == 404
    assert serve(dash, "/nope").response.status_code == 404
    head = serve(dash, "/", method="HEAD").response
    assert head.status_code == 200 and head.content == b""


def test_json_api(dash: Dashboard) -> None:
    st = api(dash, "/api/stats?range=1h")
    assert st["totals"]["events"] == 3 and st["totals"]["blocked"] == 1 and st["totals"]["not_scored"] == 1
    assert st["top_categories"] == [{"kind": "pii", "category": "EMAIL_ADDRESS", "count": 1}]
    assert sum(sum(v) for v in st["series"]["by_action"].values()) == 3
    assert api(dash, f"/api/stats?since={time.time() + 60}")["totals"]["events"] == 0
    evs = api(dash, "/api/events")["events"]
    assert [e["action"] for e in evs] == ["log", None, "block"]
    assert [e["rule"] for e in api(dash, "/api/events?action=block")["events"]] == ["block-pii"]
    assert len(api(dash, "/api/events?category=pii:EMAIL_ADDRESS")["events"]) == 1
    assert len(api(dash, "/api/events?endpoint=api.openai.com/v1/chat/completions")["events"]) == 2
    assert len(api(dash, "/api/events?limit=1&offset=1")["events"]) == 1
    eps = api(dash, "/api/endpoints")["endpoints"]
    assert {e["endpoint"] for e in eps} == {"api.openai.com/v1/chat/completions", "evil.example" + XSS_PATH}
    one = api(dash, f"/api/event/{evs[-1]['id']}")
    assert one["matched"] == ["block-pii"] and one["fields"]["cf.llm.prompt.pii_categories"] == ["EMAIL_ADDRESS"]
    assert serve(dash, "/api/event/999").response.status_code == 404
    assert serve(dash, "/api/events?limit=abc").response.status_code == 400
    assert serve(dash, "/api/stats?range=forever").response.status_code == 400


def test_metrics_endpoint(dash: Dashboard) -> None:
    r = serve(dash, "/metrics").response
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert b'llmwall_requests_total{action="block",endpoint="api.openai.com/v1/chat/completions"} 1.0' in r.content
    assert b"unsafe codes: S1 Violent Crimes," in r.content and b"S14 Code Interpreter Abuse" in r.content


def test_category_names_for_the_pages(dash: Dashboard) -> None:
    names = api(dash, "/api/categories")["unsafe"]
    assert list(names) == [f"S{i}" for i in range(1, 15)]
    assert names["S9"] == "Indiscriminate Weapons" and names["S11"] == "Suicide & Self-Harm"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_read_only(dash: Dashboard, method: str) -> None:
    r = serve(dash, "/api/events", method=method).response
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_token_header_query_cookie(dash: Dashboard) -> None:
    d = Dashboard(dash.store, dash.metrics, token="s3cret-token-123")
    assert serve(d, "/api/stats").response.status_code == 401
    assert serve(d, "/metrics").response.status_code == 401
    bad = serve(d, "/api/stats", headers={"authorization": "Bearer wrong-token-000"}).response
    assert bad.status_code == 401 and "bearer" in bad.headers["www-authenticate"].lower()
    ok = serve(d, "/api/stats", headers={"authorization": "Bearer s3cret-token-123"}).response
    assert ok.status_code == 200
    r = serve(d, "/?token=s3cret-token-123&range=1h").response
    assert r.status_code == 303 and r.headers["location"] == "/?range=1h"  # token leaves the address bar
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=s3cret-token-123") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert serve(d, "/api/stats", headers={"cookie": f"x=1; {COOKIE}=s3cret-token-123"}).response.status_code == 200
    assert serve(d, "/api/stats", headers={"cookie": f"{COOKIE}=nope"}).response.status_code == 401
    with pytest.raises(ValueError):
        Dashboard(dash.store, dash.metrics, token="short")


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_local_port_server(dash: Dashboard) -> None:
    with pytest.raises(ValueError, match="token"):
        dash.start_server(0, bind="0.0.0.0")
    dash.start_server(0)
    base = f"http://127.0.0.1:{dash.server_port}"
    status, hdrs, body = _get(base + "/api/stats")
    assert status == 200 and json.loads(body)["totals"]["events"] == 3
    assert _get(base + "/api/stats", method="POST")[0] == 405
    status, hdrs, body = _get(base + "/", method="HEAD")
    assert status == 200 and body == b"" and int(hdrs["Content-Length"]) > 0
    # DNS rebinding: a foreign Host header on the loopback server is refused
    assert _get(base + "/api/stats", headers={"Host": "attacker.example"})[0] == 421
    assert _get(base + "/api/stats", headers={"Host": f"localhost:{dash.server_port}"})[0] == 200
    dash.stop_server()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/", timeout=2)


def test_local_port_server_with_token(dash: Dashboard) -> None:
    d = Dashboard(dash.store, dash.metrics, token="tok-1234567890")
    d.start_server(0)
    try:
        base = f"http://127.0.0.1:{d.server_port}"
        assert _get(base + "/api/endpoints")[0] == 401
        assert _get(base + "/api/endpoints", {"Authorization": "Bearer tok-1234567890"})[0] == 200
    finally:
        d.stop_server()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium package is not installed")
def test_malicious_path_renders_as_text_in_a_browser(dash: Dashboard) -> None:
    """The dashboard and drill-down show an attacker-chosen path as text; no script runs."""
    from playwright.sync_api import sync_playwright

    dash.start_server(0)
    base = f"http://127.0.0.1:{dash.server_port}"
    bad_id = api(dash, "/api/events?action=log")["events"][0]["id"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda dl: (dialogs.append(dl.message), dl.dismiss()))
            page.goto(base + "/")
            page.wait_for_selector(f"#events tr[data-event-id='{bad_id}']")
            assert XSS_PATH in page.inner_text(f"#events tr[data-event-id='{bad_id}']")
            assert XSS_PATH in page.inner_text("#endpoints")
            assert page.locator("img").count() == 0
            page.goto(f"{base}/event/{bad_id}")
            page.wait_for_selector("#timings tbody tr")
            assert XSS_PATH in page.inner_text("#summary")
            assert "not scored (deadline)" in page.inner_text("#timings")
            assert page.inner_text("#deciding-rule") == "log-all"
            assert page.evaluate("window.__xss") is None and page.locator("img").count() == 0
            assert dialogs == []
        finally:
            browser.close()
