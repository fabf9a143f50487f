"""The three addons in process, with mitmproxy's ``taddons`` (as mitmproxy tests its own addons).

``LLMWall`` screens and leaves an :class:`Event` in ``flow.metadata["llmwall"]``;
``Analytics`` records it (metrics, store, endpoint inventory, response confirmation);
``DashboardAddon`` answers the dashboard's host first. End-to-end behaviour through
a real mitmdump is in test_proxy.py; these tests pin each addon's own contract.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from mitmproxy import exceptions, hooks, options
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow, tutils
from provider_samples import SAMPLES

from llmwall.analytics import addon as analytics_addon
from llmwall.analytics.addon import Analytics
from llmwall.analytics.dashboard import DashboardAddon
from llmwall.analytics.store import Store
from llmwall.proxy.addon import LLMWall, _pii_extras
from llmwall.proxy.event import METADATA_KEY, Event
from llmwall.rules import parse_rules

RULES = """\
rules:
  - id: block-email
    expression: any(cf.llm.prompt.pii_categories[*] == "EMAIL_ADDRESS")
    action: block
"""


def run(test: Callable[[], Awaitable[None]]) -> None:
    """taddons needs a running event loop for async hooks; pytest-asyncio is not a dependency."""
    asyncio.run(test())


def load(tctx: taddons.context, *addons: object) -> None:
    """Add ``addons`` to the chain and configure them with every option, as mitmdump's script loader does."""
    tctx.master.addons.add(*addons)
    for addon in addons:
        tctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(tctx.options.keys())))


def opts(**values: object) -> options.Options:
    """Options whose llmwall values apply as soon as the addons register them."""
    o = options.Options()
    o.set(*(f"{k}={v}" for k, v in values.items()), defer=True)
    return o


def chat_flow(text: str, host: str = "api.openai.com") -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.request.host = host
    flow.request.method = "POST"
    flow.request.path = "/v1/chat/completions"
    flow.request.headers["content-type"] = "application/json"
    flow.request.content = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    ).encode()
    flow.response = None
    return flow


def event(**kw: object) -> Event:
    base: dict = {"ts": time.time(), "host": "api.openai.com", "method": "POST"}
    base.update(path_template="/v1/chat/completions", format="openai.chat", model="gpt-4o-mini")
    return Event(**{**base, **kw})


# --------------------------------------------------------------------------- the event


def test_event_round_trip_and_redacted_only_when_set() -> None:
    ev = event(action="redact", fields={"cf.llm.prompt.pii_detected": True}, redacted=["EMAIL_ADDRESS"])
    assert Event.from_dict(ev.to_dict()) == ev
    plain = event().to_dict()
    assert "redacted" not in plain and plain["status"] == "screened"
    assert list(plain)[:4] == ["ts", "host", "method", "path_template"]


@pytest.mark.parametrize("bad", [None, "x", {"ts": 1}, {**event().to_dict(), "prompt": "secret text"}])
def test_event_from_anything_else_is_none(bad: object) -> None:
    assert Event.from_dict(bad) is None


# --------------------------------------------------------------------------- analytics


def test_analytics_records_the_event_left_on_the_flow(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite"

    async def test() -> None:
        analytics = Analytics()
        with taddons.context(options=opts(llmwall_db=db)) as tctx:
            load(tctx, analytics)
            flow = chat_flow("hi")
            flow.metadata[METADATA_KEY] = event(action="block", rule="r1", matched=["r1"]).to_dict()
            analytics.request(flow)
            ignored = chat_flow("hi")  # no event: not LLM traffic, or not screened
            analytics.request(ignored)
            ignored.metadata[METADATA_KEY] = {"ts": 1}
            analytics.request(ignored)
            metrics = analytics.metrics.render()[0].decode()
            analytics.done()
        assert 'llmwall_requests_total{action="block",endpoint="api.openai.com/v1/chat/completions"} 1.0' in metrics
        store = Store(db)
        try:
            events = store.events()
            assert [(e["action"], e["rule"]) for e in events] == [("block", "r1")]
            endpoints = store.endpoints()
            assert [(e["host"], e["format"], e["request_count"]) for e in endpoints] == [
                ("api.openai.com", "openai.chat", 1)
            ]
        finally:
            store.close()

    run(test)


async def answered_chat(analytics: Analytics) -> None:
    """One screened chat request and its OpenAI-shaped answer, through the analytics hooks."""
    flow = chat_flow("hi")
    flow.metadata[METADATA_KEY] = event().to_dict()
    analytics.request(flow)
    flow.response = tutils.tresp(
        content=json.dumps(SAMPLES["openai.chat"].response).encode(),
        headers=[(b"content-type", b"application/json")],
    )
    await analytics.response(flow)


def test_an_endpoint_pruned_from_the_inventory_is_confirmed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeated confirmations are not rewritten every response, but not trusted forever either."""
    db = tmp_path / "p.sqlite"
    clock = [time.time()]
    monkeypatch.setattr(analytics_addon.time, "time", lambda: clock[0])

    def confirmed() -> list[bool | None]:
        analytics._io.submit(lambda: None).result()  # the writes queued so far are done
        assert analytics.store is not None
        return [e["confirmed"] for e in analytics.store.endpoints()]

    async def test() -> None:
        with taddons.context(options=opts(llmwall_db=db)) as tctx:
            load(tctx, analytics)
            await answered_chat(analytics)
            assert confirmed() == [True]
            assert analytics.store is not None
            analytics.store._w.execute("DELETE FROM endpoints")  # as retention prunes an idle endpoint
            await answered_chat(analytics)  # within the refresh interval: the request recreates it, unconfirmed
            assert confirmed() == [None]
            clock[0] += analytics_addon.CONFIRM_REFRESH_S + 1
            await answered_chat(analytics)
            assert confirmed() == [True]
            analytics.done()

    analytics = Analytics()
    run(test)


def test_a_confirmed_endpoint_is_not_reparsed_until_its_confirmation_is_due_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confirmation is sticky in the store, so while a written one is fresh the answers of that
    endpoint are not parsed on the event loop; once it is due again they are."""
    db = tmp_path / "s.sqlite"
    clock = [time.time()]
    monkeypatch.setattr(analytics_addon.time, "time", lambda: clock[0])
    parsed: list[str] = []
    real_confirm = analytics_addon.confirm

    def counting_confirm(fmt: str, resp: object, limit: int) -> bool:
        parsed.append(fmt)
        return real_confirm(fmt, resp, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(analytics_addon, "confirm", counting_confirm)

    async def test() -> None:
        analytics = Analytics()
        with taddons.context(options=opts(llmwall_db=db)) as tctx:
            load(tctx, analytics)
            await answered_chat(analytics)
            await answered_chat(analytics)
            assert parsed == ["openai.chat"]
            clock[0] += analytics_addon.CONFIRM_REFRESH_S + 1
            await answered_chat(analytics)
            assert parsed == ["openai.chat", "openai.chat"]
            analytics.done()
        store = Store(db)
        try:
            assert [(e["confirmed"], e["request_count"]) for e in store.endpoints()] == [(True, 3)]
        finally:
            store.close()

    run(test)


def test_analytics_confirms_an_endpoint_from_its_response(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"

    async def test() -> None:
        analytics = Analytics()
        with taddons.context(options=opts(llmwall_db=db)) as tctx:
            load(tctx, analytics)
            await answered_chat(analytics)
            analytics.done()
        store = Store(db)
        try:
            assert [e["confirmed"] for e in store.endpoints()] == [True]
        finally:
            store.close()

    run(test)


def test_analytics_without_a_database_still_counts(tmp_path: Path) -> None:
    async def test() -> None:
        analytics = Analytics()
        with taddons.context(options=opts(llmwall_db="")) as tctx:
            load(tctx, analytics)
            assert analytics.store is None
            flow = chat_flow("hi")
            flow.metadata[METADATA_KEY] = event(status="parse_error", format=None).to_dict()
            analytics.request(flow)
            assert 'llmwall_unscreened_total{status="parse_error"} 1.0' in analytics.metrics.render()[0].decode()
            analytics.done()

    run(test)


def test_analytics_options_are_checked(tmp_path: Path) -> None:
    async def test() -> None:
        analytics = Analytics()
        with taddons.context(options=opts(llmwall_db=tmp_path / "o.sqlite")) as tctx:
            load(tctx, analytics)
            with pytest.raises(exceptions.OptionsError, match="at least 1"):
                tctx.configure(analytics, llmwall_retention_days=0)
            with pytest.raises(exceptions.OptionsError, match="cannot open database"):
                tctx.configure(analytics, llmwall_db=str(tmp_path / "missing-dir-is-a-file" / "x.sqlite"))
            analytics.done()

    (tmp_path / "missing-dir-is-a-file").write_text("")
    run(test)


# --------------------------------------------------------------------------- dashboard


def test_dashboard_addon_serves_its_host_and_follows_the_store(tmp_path: Path) -> None:
    async def test() -> None:
        analytics = Analytics()
        dashboard = DashboardAddon(analytics)
        with taddons.context(options=opts(llmwall_db=tmp_path / "d.sqlite")) as tctx:
            load(tctx, dashboard, analytics)
            assert dashboard.dashboard is not None  # built once the analytics addon opened its store
            flow = tflow.tflow()
            flow.request.host = "llmwall.localhost"
            flow.request.path = "/api/endpoints"
            flow.request.method = "GET"
            flow.response = None
            await dashboard.request(flow)
            assert flow.response is not None and flow.response.status_code == 200
            other = chat_flow("hi")
            await dashboard.request(other)
            assert other.response is None
            with pytest.raises(exceptions.OptionsError, match="dashboard token"):
                tctx.configure(dashboard, llmwall_dashboard_token="short")
            tctx.configure(analytics, llmwall_db="")
            assert dashboard.dashboard is None  # no store, no dashboard
            dashboard.done()
            analytics.done()

    run(test)


# --------------------------------------------------------------------------- screening


@pytest.fixture
def screening_opts(tmp_path: Path) -> options.Options:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return opts(llmwall_rules=rules, llmwall_models=tmp_path / "no-models", llmwall_db="")


def test_llmwall_blocks_and_leaves_the_event(screening_opts: options.Options) -> None:
    async def test() -> None:
        wall = LLMWall()
        with taddons.context(options=screening_opts) as tctx:
            load(tctx, wall)
            blocked = chat_flow("mail me at jane.doe@example.com")
            await wall.request(blocked)
            assert blocked.response is not None and blocked.response.status_code == 403
            error = json.loads(blocked.response.content)["error"]
            assert error["rule"] == "block-email"
            assert error["message"] == "Request blocked by llmwall (rule block-email): EMAIL_ADDRESS"
            ev = Event.from_dict(blocked.metadata[METADATA_KEY])
            assert ev is not None and (ev.action, ev.rule, ev.format) == ("block", "block-email", "openai.chat")
            assert ev.fields["cf.llm.prompt.pii_categories"] == ["EMAIL_ADDRESS"]
            assert blocked.marked == ":no_entry:"  # the comment is the console addon's (test_console.py)

            allowed = chat_flow("what is the capital of France?")
            await wall.request(allowed)
            assert allowed.response is None
            assert Event.from_dict(allowed.metadata[METADATA_KEY]).action is None  # type: ignore[union-attr]

            ordinary = tflow.tflow()
            ordinary.request.content = b'{"channel": "C1", "text": "deployed"}'
            ordinary.response = None
            await wall.request(ordinary)
            assert METADATA_KEY not in ordinary.metadata
            wall.done()

    run(test)


def test_llmwall_unreadable_body_fails_by_option(screening_opts: options.Options) -> None:
    async def test() -> None:
        wall = LLMWall()
        with taddons.context(options=screening_opts) as tctx:
            load(tctx, wall)
            tctx.configure(wall, llmwall_on_unparsed="block")
            flow = chat_flow("x")
            flow.request.content = b'{"messages": [{"role": "user", "content": "trunc'
            await wall.request(flow)
            assert flow.response is not None and flow.response.status_code == 403
            ev = Event.from_dict(flow.metadata[METADATA_KEY])
            assert ev is not None and (ev.status, ev.action, ev.format) == ("parse_error", "block", None)
            wall.running()  # a live change is refused (at start-up the error is logged instead)
            with pytest.raises(exceptions.OptionsError, match="must be one of auto, pass, block"):
                tctx.configure(wall, llmwall_on_unparsed="maybe")
            wall.done()

    run(test)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("http.host", "api.openai.com"),
        ("http.request.method", "POST"),
        ("http.request.uri", "/v1/chat/completions?trace=1"),
        ("http.request.uri.path", "/v1/chat/completions"),
        ("http.request.uri.query", "trace=1"),
        ("http.request.full_uri", "http://api.openai.com:22/v1/chat/completions?trace=1"),
        ("http.user_agent", "bench/1"),
    ],
)
def test_a_rule_on_a_request_field_sees_it(tmp_path: Path, field: str, value: str) -> None:
    """Request fields are computed only when a rule reads them: the one a rule reads is there."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - id: on-field\n    expression: '{field} eq \"{value}\"'\n    action: block\n")

    async def test() -> None:
        wall = LLMWall()
        with taddons.context(options=opts(llmwall_rules=rules, llmwall_models=tmp_path, llmwall_db="")) as tctx:
            load(tctx, wall)
            flow = chat_flow("hello")
            flow.request.path += "?trace=1"
            flow.request.headers["user-agent"] = "bench/1"
            await wall.request(flow)
            assert flow.response is not None and flow.response.status_code == 403
            wall.done()

    run(test)


def test_llmwall_include_and_exclude_follow_live_option_changes(screening_opts: options.Options) -> None:
    """The patterns are kept from configure (not read per request): a live change must still apply."""

    async def screened(wall: LLMWall, flow: tflow.HTTPFlow) -> bool:
        await wall.request(flow)
        return METADATA_KEY in flow.metadata

    def internal_api() -> tflow.HTTPFlow:
        flow = tflow.tflow()
        flow.request.host, flow.request.path, flow.request.method = "llm.internal", "/api/ask", "POST"
        flow.request.content = b'{"question": "mail me at jane.doe@example.com"}'
        flow.response = None
        return flow

    async def test() -> None:
        wall = LLMWall()
        with taddons.context(options=screening_opts) as tctx:
            load(tctx, wall)
            assert await screened(wall, chat_flow("hello"))
            assert not await screened(wall, internal_api())  # no known format
            tctx.configure(wall, llmwall_exclude=["api.openai.com/v1/*"], llmwall_include=["llm.internal/api/*"])
            assert not await screened(wall, chat_flow("hello"))
            forced = internal_api()
            assert await screened(wall, forced)
            assert forced.response is not None and forced.response.status_code == 403  # screened as custom
            tctx.configure(wall, llmwall_exclude=[], llmwall_include=[])
            assert await screened(wall, chat_flow("hello"))
            assert not await screened(wall, internal_api())
            wall.done()

    run(test)


def test_the_chain_screens_then_records(screening_opts: options.Options, tmp_path: Path) -> None:
    """mitm_entry's order: the dashboard, screening, analytics; one request hook through all three."""
    db = tmp_path / "chain.sqlite"

    async def test() -> None:
        analytics = Analytics()
        wall = LLMWall()
        dashboard = DashboardAddon(analytics)
        with taddons.context(options=screening_opts) as tctx:
            load(tctx, dashboard, wall, analytics)
            tctx.configure(analytics, llmwall_db=str(db))
            flow = chat_flow("mail me at jane.doe@example.com")
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(flow))
            assert flow.response is not None and flow.response.status_code == 403
            page = tflow.tflow()
            page.request.host, page.request.path, page.request.method = "llmwall.localhost", "/api/events", "GET"
            page.response = None
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(page))
            assert page.response is not None and page.response.status_code == 200
            assert METADATA_KEY not in page.metadata  # the dashboard answered; screening never saw it
            for addon in (dashboard, wall, analytics):
                addon.done()
        store = Store(db)
        try:
            assert [e["rule"] for e in store.events()] == ["block-email"]
        finally:
            store.close()

    run(test)


# --------------------------------------------------------------------------- PII extras from the rules


@pytest.mark.parametrize(
    ("expression", "enabled", "extras"),
    [
        ('any(cf.llm.prompt.pii_categories[*] == "URL")', True, {"URL"}),
        ('cf.llm.prompt.pii_categories[0] in {"DATE_TIME" "EMAIL_ADDRESS"}', True, {"DATE_TIME"}),
        ('any(llm.prompt.pii_categories[*] eq "URL") and http.host eq "DATE_TIME"', True, {"URL"}),
        ('http.user_agent contains "URL"', True, set()),  # text search used to switch URL on here
        ('cf.llm.request.model eq "URL"', True, set()),
        ('any(cf.llm.prompt.pii_categories[*] == "URL")', False, set()),
    ],
)
def test_pii_extras_come_from_the_compiled_rules(expression: str, enabled: bool, extras: set[str]) -> None:
    ruleset = parse_rules(
        f"rules:\n  - id: r\n    expression: '{expression}'\n    action: log\n    enabled: {str(enabled).lower()}\n"
    )
    assert _pii_extras(ruleset) == extras
