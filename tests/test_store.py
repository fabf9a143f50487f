"""Event store: schema, validation (privacy), filters, stats, retention, multi-process writes, CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from llmwall.analytics import store as S
from llmwall.analytics.store import Store
from llmwall.cli import analytics as cli_analytics


def ev(when: float, **kw: object) -> dict:
    base = {
        "ts": when,
        "host": "api.openai.com",
        "method": "POST",
        "path_template": "/v1/chat/completions",
        "format": "openai.chat",
        "model": "gpt-4o-mini",
        "action": None,
        "rule": None,
        "matched": [],
        "fields": {"cf.llm.prompt.detected": True, "cf.llm.prompt.token_count": 12},
        "timings_ms": {"tokens": 0.4, "pii": 3.0},
        "not_scored": [],
        "errors": [],
        "total_ms": 4.1,
        "status": "screened",
    }
    base.update(kw)
    return base


@pytest.fixture
def db(tmp_path: Path):
    s = Store(tmp_path / "a" / "llmwall.sqlite", retention_days=0)  # fixed old timestamps stay
    yield s
    s.close()


def test_schema_wal_and_private_file(db: Store) -> None:
    conn = sqlite3.connect(db.path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"events", "event_categories", "endpoints"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == S.SCHEMA_VERSION
    conn.close()
    db.record_event(ev(1.0))
    for suffix in ("", "-wal", "-shm"):
        assert os.stat(f"{db.path}{suffix}").st_mode & 0o077 == 0, suffix


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not sqlite\n" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        Store(bad)
    assert bad.read_text().startswith("this is not sqlite")  # untouched


def test_roundtrip_keeps_everything_but_text(db: Store) -> None:
    fields = {
        "cf.llm.prompt.pii_detected": True,
        "cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS", "PHONE_NUMBER"],
        "cf.llm.prompt.unsafe_topic_detected": True,
        "cf.llm.prompt.unsafe_topic_categories": ["S1"],
        "cf.llm.prompt.injection_score": 87,
        "cf.llm.prompt.custom_topic_categories": {"competitors": 12, "pets": 90},
        "llm.prompt.token_count": 33,  # alias is canonicalised
    }
    i = db.record_event(
        ev(
            100.0,
            action="block",
            rule="block-pii",
            matched=["block-pii", "log-all"],
            fields=fields,
            not_scored=["llama_guard"],
            errors=["injection"],
        )
    )
    got = db.event(i)
    assert got is not None
    assert got["action"] == "block" and got["rule"] == "block-pii"
    assert got["matched"] == ["block-pii", "log-all"]
    assert got["fields"]["cf.llm.prompt.token_count"] == 33
    assert got["fields"]["cf.llm.prompt.custom_topic_categories"] == {"competitors": 12, "pets": 90}
    assert got["not_scored"] == ["llama_guard"] and got["errors"] == ["injection"]
    assert got["endpoint"] == "api.openai.com/v1/chat/completions"
    cats = (
        sqlite3.connect(db.path)
        .execute("SELECT kind, category FROM event_categories WHERE event_id = ? ORDER BY 1, 2", (i,))
        .fetchall()
    )
    # custom topics count as detected only below CUSTOM_MATCH_SCORE
    assert cats == [("custom", "competitors"), ("pii", "EMAIL_ADDRESS"), ("pii", "PHONE_NUMBER"), ("unsafe", "S1")]
    assert db.event(i + 100) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": "tell me a secret"},  # unknown top-level key
        {"headers": {"authorization": "Bearer sk-x"}},  # unknown top-level key
        {"fields": {"http.request.uri": "/v1?q=secret"}},  # not an llm field
        {"fields": {"cf.llm.prompt.text": "hello"}},  # unknown field
        {"fields": {"cf.llm.prompt.pii_categories": ["a\nb"]}},  # control chars: not a label
        {"fields": {"cf.llm.prompt.pii_categories": ["x" * 500]}},  # too long to be a category
        {"fields": {"cf.llm.prompt.pii_categories": "EMAIL_ADDRESS"}},  # not a list
        {"fields": {"cf.llm.prompt.token_count": "12"}},  # wrong type
        {"fields": {"cf.llm.prompt.custom_topic_categories": {"a": "hi"}}},
        {"action": "block this please"},  # not an identifier
        {"not_scored": ["some detector text"]},
        {"timings_ms": {"pii": "fast"}},
        {"ts": float("nan")},
        {"path_template": "/v1/chat/completions?key=sk-123"},  # queries may carry keys
    ],
)
def test_refuses_unknown_keys_and_bad_values(db: Store, bad: dict) -> None:
    with pytest.raises(ValueError):
        db.record_event(ev(1.0, **bad))
    assert db.events() == []


def test_filters_and_paging(db: Store) -> None:
    db.record_event(ev(10.0, action="block", rule="r-pii", fields={"cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]}))
    db.record_event(ev(20.0, action="log", fields={"cf.llm.prompt.unsafe_topic_categories": ["S1", "S9"]}))
    db.record_event(ev(30.0, host="api.anthropic.com", path_template="/v1/messages", format="anthropic.messages"))
    db.record_event(ev(40.0, action="block", fields={"cf.llm.prompt.secret_categories": ["AWS Access Key"]}))
    ts = lambda rows: [r["ts"] for r in rows]  # noqa: E731
    assert ts(db.events()) == [40.0, 30.0, 20.0, 10.0]
    assert ts(db.events(action="block")) == [40.0, 10.0]
    assert ts(db.events(action="allow")) == [30.0]
    assert ts(db.events(category="S9")) == [20.0]
    assert ts(db.events(category="unsafe:S1")) == [20.0]
    assert ts(db.events(category="pii:S1")) == []
    assert ts(db.events(category="secret:AWS Access Key")) == [40.0]
    assert ts(db.events(endpoint="api.anthropic.com/v1/messages")) == [30.0]
    assert ts(db.events(since=15, until=40)) == [30.0, 20.0]
    assert ts(db.events(limit=2, offset=1)) == [30.0, 20.0]


def test_stats_totals_top_and_series(db: Store) -> None:
    t0 = 1_000_000.0
    for i in range(6):
        db.record_event(ev(t0 + i * 60, action="block", fields={"cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]}))
    for i in range(3):
        db.record_event(
            ev(
                t0 + i * 60,
                action="log",
                fields={"cf.llm.prompt.unsafe_topic_categories": ["S1"]},
                not_scored=["llama_guard"],
            )
        )
    db.record_event(ev(t0 + 30, status="parse_error", fields={}))
    db.record_event(ev(t0 + 400))
    st = db.stats(since=t0, until=t0 + 600, bucket_s=60)
    tot = st["totals"]
    assert (tot["events"], tot["screened"], tot["blocked"], tot["logged"], tot["not_scored"], tot["unparsed"]) == (
        11,
        10,
        6,
        3,
        3,
        1,
    )
    assert tot["allowed"] == 1
    assert st["top_categories"][0] == {"kind": "pii", "category": "EMAIL_ADDRESS", "count": 6}
    series = st["series"]
    assert series["bucket_s"] == 60 and len(series["buckets"]) == 11
    assert sum(series["by_action"]["block"]) == 6 and sum(series["by_action"]["log"]) == 3
    assert series["by_action"]["block"][:6] == [1] * 6
    assert sum(series["by_category"]["unsafe:S1"]) == 3
    assert sum(sum(v) for v in series["by_action"].values()) == 11
    assert db.stats(since=t0 + 10_000)["totals"]["events"] == 0
    coarse = db.stats(since=t0, until=t0 + 600, bucket_s=0)["series"]  # nonsense bucket: still every event
    assert coarse["bucket_s"] >= 1 and sum(sum(v) for v in coarse["by_action"].values()) == 11


def test_upsert_endpoint_counts_confirms_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "e.sqlite"
    s = Store(path)
    now = time.time()
    s.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", now - 50)
    s.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", now - 10)
    s.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", now - 9, confirmed=True)
    s.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", now - 8, confirmed=False)
    s.upsert_endpoint("localhost:11434", "POST", "/api/chat", "ollama.chat", now - 5)
    s.close()
    s = Store(path)
    eps = {e["endpoint"]: e for e in s.endpoints()}
    s.close()
    oa = eps["api.openai.com/v1/chat/completions"]
    assert oa["request_count"] == 2 and oa["confirmed"] is True
    assert oa["first_seen"] == pytest.approx(now - 50) and oa["last_seen"] == pytest.approx(now - 8)
    assert eps["localhost:11434/api/chat"]["confirmed"] is None


def test_retention_by_age(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.sqlite", retention_days=1)
    now = time.time()
    s.record_event(ev(now - 3 * 86400, fields={"cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]}))
    s.record_event(ev(now - 60))
    s.upsert_endpoint("old.example", "POST", "/v1/chat/completions", "openai.chat", now - 3 * 86400)
    s.upsert_endpoint("new.example", "POST", "/v1/chat/completions", "openai.chat", now)
    s.prune()
    assert [e["ts"] for e in s.events()] == [pytest.approx(now - 60)]
    assert [e["host"] for e in s.endpoints()] == ["new.example"]
    orphan = sqlite3.connect(s.path).execute("SELECT count(*) FROM event_categories").fetchone()[0]
    assert orphan == 0  # categories go with their event
    s.close()


def test_retention_by_size_shrinks_file_and_keeps_newest(tmp_path: Path) -> None:
    s = Store(tmp_path / "big.sqlite", retention_days=0, max_mb=0.25)
    fields = {"cf.llm.prompt.custom_topic_categories": {f"topic-{i}": 50 for i in range(20)}}
    n = 3000
    for i in range(n):
        s.record_event(ev(1000.0 + i, fields=fields))
    s.prune()
    rows = sqlite3.connect(s.path).execute("SELECT count(*), max(ts) FROM events").fetchone()
    assert 0 < rows[0] < n
    assert rows[1] == 1000.0 + n - 1  # the newest survive
    assert s._used_bytes() <= s.max_bytes
    s.close()
    assert os.path.getsize(s.path) <= s.max_bytes * 1.5  # incremental vacuum gave the pages back


def _writer(path: str, worker: int, n: int) -> None:
    s = Store(path)
    for _i in range(n):
        s.record_event(ev(time.time(), fields={"cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]}))
        s.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", time.time())
    s.close()


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "mp.sqlite")
    Store(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    s = Store(path)
    assert s.stats()["totals"]["events"] == 300
    assert s.endpoints()[0]["request_count"] == 300
    assert s.stats()["top_categories"][0]["count"] == 300
    s.close()


def test_threads_write_and_read_concurrently(db: Store) -> None:
    import threading

    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _i in range(n):
                db.record_event(
                    ev(time.time(), action="block", fields={"cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]})
                )
                db.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", time.time())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(30):
                db.stats()
                db.events(limit=20)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(100,)) for _ in range(6)] + [
        threading.Thread(target=read) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert db.stats()["totals"]["blocked"] == 600
    assert db.endpoints()[0]["request_count"] == 600


def test_cli_endpoints_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.sqlite"
    assert cli_analytics._main(["stats", "--db", str(path)]) == 1  # no database: clear error, nothing created
    assert not path.exists()
    s = Store(path)
    s.record_event(ev(time.time(), action="block", fields={"cf.llm.prompt.pii_categories": ["EMAIL_ADDRESS"]}))
    s.record_event(ev(time.time() - 7200))
    s.upsert_endpoint("api.openai.com", "POST", "/v1/chat/completions", "openai.chat", time.time())
    s.close()
    capsys.readouterr()
    assert cli_analytics._main(["stats", "--db", str(path), "--json", "--since", "1h"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["events"] == 1 and out["totals"]["blocked"] == 1
    assert cli_analytics._main(["stats", "--db", str(path)]) == 0
    text = capsys.readouterr().out
    assert "blocked" in text and "EMAIL_ADDRESS" in text
    assert cli_analytics._main(["endpoints", "--db", str(path)]) == 0
    assert "/v1/chat/completions" in capsys.readouterr().out
    assert cli_analytics._main(["endpoints", "--db", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["request_count"] == 1
    assert cli_analytics._main(["stats", "--db", str(path), "--since", "yesterday"]) == 2


def test_parse_duration() -> None:
    assert S.parse_duration("90s") == 90 and S.parse_duration("1h") == 3600 and S.parse_duration("2") == 2
    with pytest.raises(ValueError):
        S.parse_duration("1y")
