"""SQLite event store and endpoint inventory: analytics that never hold prompt text.

One row per screened request (the "event record" of docs/architecture.md) plus a
side table of detected categories for filtering and top-N queries, and an
endpoint inventory that survives restarts.  Privacy is enforced here, not only by
the caller: ``record_event`` refuses any key or field it does not know and any
value of the wrong shape, so a future bug cannot slip prompt text into the file.

Several mitmproxy processes may share one file: WAL journal, ``busy_timeout``,
``BEGIN IMMEDIATE`` writes.  Inside a process one writer connection and one
reader connection, each behind its own lock, are shared by all threads (thread
pools and the dashboard's per-request threads would otherwise leak connections).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from llmwall import fields as F

#: Default database path; the addon option ``llmwall_db`` uses the same default.
DEFAULT_DB: Final = "~/.llmwall/llmwall.sqlite"

#: Prune (age + size) after this many inserts by one Store.
PRUNE_EVERY: Final = 500
#: A custom topic counts as a detected category below this score (Cloudflare: lower = more relevant;
#: its docs' example rule uses ``lt 30``).
CUSTOM_MATCH_SCORE: Final = 30
#: Most endpoints kept in the inventory; the least recently seen go first.
MAX_ENDPOINTS: Final = 5000
SCHEMA_VERSION: Final = 1

#: Event keys and the validator of each; anything else is refused.
EVENT_KEYS: Final = frozenset(
    {
        "ts",
        "host",
        "method",
        "path_template",
        "format",
        "model",
        "action",
        "rule",
        "matched",
        "fields",
        "timings_ms",
        "not_scored",
        "errors",
        "total_ms",
        "status",
        "redacted",
        "response",
    }
)
#: Category list fields -> the ``kind`` stored in event_categories.
CATEGORY_KINDS: Final[dict[str, str]] = {
    F.UNSAFE_TOPIC_CATEGORIES: "unsafe",
    F.PII_CATEGORIES: "pii",
    F.SECRET_CATEGORIES: "secret",
    F.RESPONSE_UNSAFE_TOPIC_CATEGORIES: "response_unsafe",
    F.RESPONSE_PII_CATEGORIES: "response_pii",
    F.RESPONSE_SECRET_CATEGORIES: "response_secret",
}
CUSTOM_FIELD: Final = F.CUSTOM_TOPIC_CATEGORIES
KINDS: Final = ("unsafe", "pii", "secret", "custom", "response_unsafe", "response_pii", "response_secret")
#: Status of an event about a model's answer (see llmwall.responses); the others are about requests.
RESPONSE_STATUS: Final = "response"

_WORD = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # actions, statuses, detector names
_LABEL = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")  # categories, rule ids: printable, short

_SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    host TEXT NOT NULL,
    method TEXT NOT NULL,
    path_template TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    format TEXT,
    model TEXT,
    action TEXT,
    rule TEXT,
    status TEXT NOT NULL,
    total_ms REAL,
    n_not_scored INTEGER NOT NULL DEFAULT 0,
    n_errors INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
-- covering index: totals and the by-action series read only the index
CREATE INDEX IF NOT EXISTS events_ts ON events(ts, action, status, n_not_scored, n_errors);
CREATE INDEX IF NOT EXISTS events_action_ts ON events(action, ts);
CREATE INDEX IF NOT EXISTS events_endpoint_ts ON events(endpoint, ts);
CREATE TABLE IF NOT EXISTS event_categories (
    event_id INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    category TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_categories_event ON event_categories(event_id);
CREATE INDEX IF NOT EXISTS event_categories_cat ON event_categories(category, kind);
CREATE TABLE IF NOT EXISTS endpoints (
    host TEXT NOT NULL,
    method TEXT NOT NULL,
    path_template TEXT NOT NULL,
    format TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    request_count INTEGER NOT NULL DEFAULT 0,
    confirmed INTEGER,
    PRIMARY KEY (host, method, path_template)
);
CREATE INDEX IF NOT EXISTS endpoints_last_seen ON endpoints(last_seen);
-- rate-limit decisions (llmwall.ratelimit): hashed key and counts only
CREATE TABLE IF NOT EXISTS rate_limit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    phase TEXT NOT NULL,
    action TEXT NOT NULL,
    unit TEXT NOT NULL,
    cost INTEGER NOT NULL,
    used INTEGER,
    lim INTEGER NOT NULL,
    period INTEGER NOT NULL,
    retry_after INTEGER,
    completion INTEGER
);
CREATE INDEX IF NOT EXISTS rate_limit_events_ts ON rate_limit_events(ts);
CREATE INDEX IF NOT EXISTS rate_limit_events_key ON rate_limit_events(rule, key, id);
"""

#: Rate-limit event keys; ``key`` is the hex HMAC the limiter counts under, never a raw value.
RATE_LIMIT_KEYS: Final = frozenset(
    {"ts", "rule", "key", "phase", "action", "unit", "cost", "used", "limit", "period", "retry_after", "completion"}
)
#: Most rate-limit events kept (oldest dropped first), besides the retention period.
MAX_RATE_LIMIT_EVENTS: Final = 1_000_000
_HEX_KEY = re.compile(r"^[0-9a-f]{8,64}$")

#: Chart bucket sizes to choose from, seconds.
_BUCKETS: Final = (10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS: Final = 120
MIN_CHART_SPAN_S: Final = 900
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``, ``"2w"`` or plain seconds -> seconds; ValueError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 7d, 2w)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def endpoint_key(host: str, path_template: str) -> str:
    """The endpoint id used by filters and the inventory: host + path template."""
    return f"{host}{path_template}"


# --------------------------------------------------------------------------- validation


def _check_str(name: str, value: object, max_len: int, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len or any(ord(c) < 32 for c in value):
        raise ValueError(f"event key {name!r}: expected a short printable string, got {type(value).__name__}")
    return value


def _check_word(name: str, value: object, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _WORD.match(value):
        raise ValueError(f"event key {name!r}: expected an identifier like 'block', got {value!r:.40}")
    return value


def _check_path(value: object) -> str:
    """A path template: no query string (queries can carry keys and user text)."""
    path = _check_str("path_template", value, 2048, optional=False)
    assert path is not None
    if "?" in path or "#" in path:
        raise ValueError("event key 'path_template': must not contain a query or fragment")
    return path


def _check_number(name: str, value: object, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"event key {name!r}: expected a finite number")
    return float(value)


def _check_labels(name: str, value: object, pattern: re.Pattern[str] = _LABEL) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"event key {name!r}: expected a list of labels")
    out = []
    for v in value:
        if not isinstance(v, str) or not pattern.match(v):
            raise ValueError(f"event key {name!r}: each item must be a short label")
        out.append(v)
    return sorted(set(out)) if isinstance(value, (set, frozenset)) else out


def _check_fields(value: object) -> dict[str, object]:
    """Only ``cf.llm.*`` detection fields, with values of their schema type (no free text)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("event key 'fields': expected a dict")
    out: dict[str, object] = {}
    for raw_name, v in value.items():
        name = F.canonical(raw_name) if isinstance(raw_name, str) else None
        if name is None or not name.startswith(F.LLM_PREFIX):
            raise ValueError(f"event field {raw_name!r:.60} is not an llm detection field")
        typ = F.SCHEMA[name]
        if typ == F.BOOL:
            if not isinstance(v, bool):
                raise ValueError(f"event field {name}: expected a bool")
        elif typ == F.INT:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"event field {name}: expected an int")
        elif typ == F.ARRAY_STRING:
            v = _check_labels(name, v)
        elif typ == F.MAP_INT:
            if not isinstance(v, dict) or not all(
                isinstance(k, str) and _LABEL.match(k) and isinstance(s, int) and not isinstance(s, bool)
                for k, s in v.items()
            ):
                raise ValueError(f"event field {name}: expected a map of label -> int")
            v = dict(v)
        elif typ == F.STRING:  # cf.llm.request.format / model: identifiers, not text
            v = _check_str(name, v, 256, optional=False)
        else:
            raise ValueError(f"event field {name}: type {typ} is not storable")
        out[name] = v
    return out


def _check_timings(value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("event key 'timings_ms': expected a dict of detector -> ms")
    out: dict[str, float] = {}
    for k, v in value.items():
        _check_word("timings_ms", k, optional=False)
        ms = _check_number(f"timings_ms[{k}]", v, optional=False)
        if ms is not None:  # never None: optional=False raises instead
            out[k] = ms
    return out


def validate_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return a normalised copy of ``event``; ValueError names the first offending key."""
    if not isinstance(event, dict):
        raise ValueError("event must be a dict")
    unknown = set(event) - EVENT_KEYS
    if unknown:
        raise ValueError(f"event has unknown keys (refused, they may hold prompt text): {sorted(map(str, unknown))}")
    if "ts" not in event or "host" not in event:
        raise ValueError("event needs at least 'ts' and 'host'")
    return {
        "ts": _check_number("ts", event["ts"], optional=False),
        "host": _check_str("host", event["host"], 255, optional=False),
        "method": _check_word("method", event.get("method") or "POST", optional=False),
        "path_template": _check_path(event.get("path_template") or "/"),
        "format": _check_word("format", event.get("format")),
        "model": _check_str("model", event.get("model"), 256),
        "action": _check_word("action", event.get("action")),
        "rule": _check_str("rule", event.get("rule"), 128),
        "matched": _check_labels("matched", event.get("matched")),
        "fields": _check_fields(event.get("fields")),
        "timings_ms": _check_timings(event.get("timings_ms")),
        "not_scored": _check_labels("not_scored", event.get("not_scored"), _WORD),
        "errors": _check_labels("errors", event.get("errors"), _WORD),
        "total_ms": _check_number("total_ms", event.get("total_ms")),
        "status": _check_word("status", event.get("status") or "screened", optional=False),
        "redacted": _check_labels("redacted", event.get("redacted")),  # categories redacted, never values
        "response": _check_response(event.get("response")),
    }


def _rate_limit_row(event: dict[str, Any]) -> tuple[Any, ...]:
    """A rate-limit event as a table row; ValueError for unknown keys, a raw key or ill-typed values."""
    unknown = set(event) - RATE_LIMIT_KEYS
    if unknown:
        raise ValueError(f"unknown rate-limit event keys: {sorted(unknown)}")
    key = event.get("key")
    if not isinstance(key, str) or not _HEX_KEY.match(key):
        raise ValueError("rate-limit event key must be a hex digest")
    ints = []
    for name in ("cost", "used", "limit", "period", "retry_after", "completion"):
        value = event.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"rate-limit event {name!r} must be an integer")
        if value is None and name in ("cost", "limit", "period"):
            raise ValueError(f"rate-limit event needs {name!r}")
        ints.append(value)
    return (
        _check_number("ts", event.get("ts"), optional=False),
        _check_labels("rule", [event.get("rule")])[0],
        key,
        _check_word("phase", event.get("phase"), optional=False),
        _check_word("action", event.get("action"), optional=False),
        _check_word("unit", event.get("unit"), optional=False),
        *ints,
    )


def _check_response(value: object) -> dict[str, object]:
    """A response event's stream summary: how it ended (a word) and counts, nothing else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("event key 'response': expected a dict")
    out: dict[str, object] = {}
    for k, v in value.items():
        _check_word("response", k, optional=False)
        out[k] = (
            _check_word(f"response[{k}]", v, optional=False)
            if k == "end"
            else _check_number(f"response[{k}]", v, optional=False)
        )
    return out


def event_categories(fields: dict[str, object]) -> list[tuple[str, str]]:
    """(kind, category) pairs detected in validated ``fields``, for the side table."""
    out: list[tuple[str, str]] = []
    for name, kind in CATEGORY_KINDS.items():
        cats = fields.get(name)
        for cat in cats if isinstance(cats, list) else ():
            out.append((kind, str(cat)))
    custom = fields.get(CUSTOM_FIELD) or {}
    assert isinstance(custom, dict)
    for label, score in custom.items():
        if score < CUSTOM_MATCH_SCORE:
            out.append(("custom", label))
    return sorted(set(out))


# --------------------------------------------------------------------------- store


class Store:
    """Events + endpoint inventory in one SQLite file; thread-safe, multi-process safe."""

    def __init__(self, path: str | os.PathLike[str], retention_days: float = 30.0, max_mb: float = 256.0) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        if retention_days < 0 or max_mb <= 0:
            raise ValueError("retention_days must be >= 0 (0 = keep forever) and max_mb > 0")
        self.retention_days = float(retention_days)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._inserts = 0
        self._closed = False
        # Owner-only file (traffic metadata); SQLite gives the -wal/-shm files the same mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._w = self._connect()
        try:
            self._init_schema()
            self._r = self._connect()
        except BaseException:
            self._w.close()
            raise
        self.prune()

    # ---- connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a crash may lose the last events only
        return conn

    def _init_schema(self) -> None:
        c = self._w
        # auto_vacuum only takes effect before the first table exists: lets prune() shrink the file.
        c.execute("PRAGMA auto_vacuum = INCREMENTAL")
        if c.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise RuntimeError(f"{self.path}: could not switch to WAL mode")
        c.execute("PRAGMA journal_size_limit = 8388608")
        with self._write():
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: schema version {version} is newer than this llmwall ({SCHEMA_VERSION})"
                )
            for stmt in filter(None, (s.strip() for s in _SCHEMA_SQL.split(";"))):
                c.execute(stmt)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    class _Tx:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the writer lock (ROLLBACK on error)."""

        def __init__(self, store: Store) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._wlock.acquire()
            try:
                self.store._w.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._wlock.release()
                raise
            return self.store._w

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            try:
                self.store._w.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.store._wlock.release()

    def _write(self) -> Store._Tx:
        if self._closed:
            raise RuntimeError("store is closed")
        return Store._Tx(self)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        if self._closed:
            raise RuntimeError("store is closed")
        with self._rlock:
            return self._r.execute(sql, tuple(params)).fetchall()

    # ---- writes

    def record_event(self, event: dict[str, Any]) -> int:
        """Store one event; returns its id.  ValueError for unknown keys or bad values (nothing stored)."""
        ev = validate_event(event)
        stored = {k: ev[k] for k in ("matched", "fields", "timings_ms", "not_scored", "errors", "redacted")}
        if ev["response"]:
            stored["response"] = ev["response"]
        data = json.dumps(stored, separators=(",", ":"), sort_keys=True)
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO events (ts, host, method, path_template, endpoint, format, model, action, rule,"
                " status, total_ms, n_not_scored, n_errors, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ev["ts"],
                    ev["host"],
                    ev["method"],
                    ev["path_template"],
                    endpoint_key(ev["host"], ev["path_template"]),
                    ev["format"],
                    ev["model"],
                    ev["action"],
                    ev["rule"],
                    ev["status"],
                    ev["total_ms"],
                    len(ev["not_scored"]),
                    len(ev["errors"]),
                    data,
                ),
            )
            event_id = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT INTO event_categories (event_id, kind, category) VALUES (?,?,?)",
                [(event_id, kind, cat) for kind, cat in event_categories(ev["fields"])],
            )
            self._inserts += 1
            due = self._inserts % PRUNE_EVERY == 0
        if due:
            self.prune()
        return event_id

    def record_rate_limits(self, events: list[dict[str, Any]]) -> None:
        """Store rate-limit decisions in one transaction; an invalid one is skipped (ValueError after the rest)."""
        rows, errors = [], []
        for event in events:
            try:
                rows.append(_rate_limit_row(event))
            except ValueError as exc:
                errors.append(str(exc))
        if rows:
            with self._write() as c:
                c.executemany(
                    "INSERT INTO rate_limit_events (ts, rule, key, phase, action, unit, cost, used, lim, period,"
                    " retry_after, completion) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                self._inserts += len(rows)
                due = self._inserts // PRUNE_EVERY != (self._inserts - len(rows)) // PRUNE_EVERY
            if due:
                self.prune()
        if errors:
            raise ValueError(f"{len(errors)} rate-limit events refused: {errors[0]}")

    def rate_limit_consumers(self, since: float, now: float | None = None, top: int = 20) -> list[dict[str, Any]]:
        """The keys that used the most of each rate limit since ``since``, with their estimated remaining budget.

        ``remaining`` starts from the usage the limiter reported at the key's last decision
        and lets it decay over one period, as the sliding window does (an estimate between
        decisions; the counters themselves live in memory or Redis).
        """
        now = time.time() if now is None else now
        rows = self._query(
            "SELECT r.rule, r.key, r.unit, r.charged, r.blocked, r.logged, r.requests, r.last_ts,"
            " l.used, l.lim, l.period, l.ts AS used_ts FROM ("
            "  SELECT rule, key, max(unit) AS unit, max(id) AS last_id, max(ts) AS last_ts,"
            "  sum(CASE WHEN action IN ('allow', 'log') THEN cost ELSE 0 END) AS charged,"
            "  sum(action = 'block') AS blocked, sum(action = 'log') AS logged,"
            "  sum(phase = 'request') AS requests"
            "  FROM rate_limit_events WHERE ts >= ? GROUP BY rule, key"
            "  ORDER BY charged DESC LIMIT ?) r"
            " JOIN rate_limit_events l ON l.id = r.last_id",
            (since, max(1, min(int(top), 500))),
        )
        out = []
        for r in rows:
            decay = max(0.0, 1.0 - (now - r["used_ts"]) / r["period"]) if r["period"] else 0.0
            used_now = (r["used"] or 0) * decay
            out.append(
                {
                    "rule": r["rule"],
                    "key": r["key"],
                    "unit": r["unit"],
                    "charged": r["charged"],
                    "requests": r["requests"],
                    "blocked": r["blocked"],
                    "logged": r["logged"],
                    "limit": r["lim"],
                    "period": r["period"],
                    "remaining": max(0, int(r["lim"] - used_now)),
                    "last_ts": r["last_ts"],
                }
            )
        return out

    def upsert_endpoint(
        self,
        host: str,
        method: str,
        path_template: str,
        fmt: str,
        ts: float,
        confirmed: bool | None = None,
        count: int | None = None,
    ) -> None:
        """Add or refresh an inventory row.

        ``count`` is how many requests this call adds; by default 1 for a request-time call
        (``confirmed is None``) and 0 for a response-time confirmation, so calling once per
        request and once per response counts each request once.  Confirmation is sticky:
        once a response confirmed the endpoint, a later non-LLM response does not undo it.
        """
        _check_str("host", host, 255, optional=False)
        _check_word("method", method, optional=False)
        _check_path(path_template)
        _check_word("format", fmt)
        _check_number("ts", ts, optional=False)
        n = (1 if confirmed is None else 0) if count is None else int(count)
        conf = None if confirmed is None else int(bool(confirmed))
        with self._write() as c:
            c.execute(
                "INSERT INTO endpoints (host, method, path_template, format, first_seen, last_seen,"
                " request_count, confirmed) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(host, method, path_template) DO UPDATE SET"
                " format = coalesce(excluded.format, format),"
                " first_seen = min(first_seen, excluded.first_seen),"
                " last_seen = max(last_seen, excluded.last_seen),"
                " request_count = request_count + excluded.request_count,"
                " confirmed = CASE WHEN excluded.confirmed IS NULL THEN confirmed"
                "                  ELSE max(coalesce(confirmed, 0), excluded.confirmed) END",
                (host, method, path_template, fmt, ts, ts, n, conf),
            )

    def prune(self, now: float | None = None) -> None:
        """Apply retention: drop events older than ``retention_days``, then the oldest until under ``max_mb``."""
        now = time.time() if now is None else now
        if self.retention_days > 0:
            cutoff = now - self.retention_days * 86400
            with self._write() as c:
                c.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
                c.execute("DELETE FROM endpoints WHERE last_seen < ?", (cutoff,))
                c.execute("DELETE FROM rate_limit_events WHERE ts < ?", (cutoff,))
        with self._write() as c:
            c.execute(
                "DELETE FROM rate_limit_events WHERE id <= (SELECT max(id) FROM rate_limit_events) - ?",
                (MAX_RATE_LIMIT_EVENTS,),
            )
            c.execute(
                "DELETE FROM endpoints WHERE rowid IN (SELECT rowid FROM endpoints"
                " ORDER BY last_seen DESC LIMIT -1 OFFSET ?)",
                (MAX_ENDPOINTS,),
            )
        for _ in range(20):  # each pass removes enough oldest rows to get ~10% under the limit
            used = self._used_bytes()
            if used <= self.max_bytes:
                break
            with self._write() as c:
                total = c.execute("SELECT count(*) FROM events").fetchone()[0]
                if total == 0:
                    break
                drop = max(1, math.ceil(total * (1 - 0.9 * self.max_bytes / used)))
                c.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts, id LIMIT ?)", (drop,))
        with self._wlock:
            self._w.execute("PRAGMA incremental_vacuum").fetchall()
            self._w.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _used_bytes(self) -> int:
        with self._wlock:
            c = self._w
            pages = c.execute("PRAGMA page_count").fetchone()[0]
            free = c.execute("PRAGMA freelist_count").fetchone()[0]
            size = c.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        """Checkpoint and close both connections; later calls raise RuntimeError."""
        if self._closed:
            return
        with self._wlock, self._rlock:
            self._closed = True
            try:
                self._w.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass  # another process holds the WAL; it checkpoints later
            self._r.close()
            self._w.close()

    # ---- reads

    def endpoints(self) -> list[dict[str, Any]]:
        """The inventory, most recently seen first."""
        rows = self._query(
            "SELECT host, method, path_template, format, first_seen, last_seen, request_count, confirmed"
            " FROM endpoints ORDER BY last_seen DESC"
        )
        out = []
        for r in rows:
            d = dict(r)
            d["confirmed"] = None if d["confirmed"] is None else bool(d["confirmed"])
            d["endpoint"] = endpoint_key(d["host"], d["path_template"])
            out.append(d)
        return out

    @staticmethod
    def _where(
        since: float | None,
        until: float | None,
        action: str | None = None,
        category: str | None = None,
        endpoint: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("e.ts >= ?")
            params.append(float(since))
        if until is not None:
            clauses.append("e.ts < ?")
            params.append(float(until))
        if action:
            if action in ("allow", "none"):
                clauses.append("e.action IS NULL")
            else:
                clauses.append("e.action = ?")
                params.append(action)
        if endpoint:
            clauses.append("e.endpoint = ?")
            params.append(endpoint)
        if category:
            kind, sep, cat = category.partition(":")
            if sep and kind in KINDS:
                clauses.append(
                    "EXISTS (SELECT 1 FROM event_categories c WHERE c.event_id = e.id"
                    " AND c.category = ? AND c.kind = ?)"
                )
                params += [cat, kind]
            else:
                clauses.append("EXISTS (SELECT 1 FROM event_categories c WHERE c.event_id = e.id AND c.category = ?)")
                params.append(category)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        d = dict(r)
        data = json.loads(d.pop("data"))
        d.pop("n_not_scored", None)
        d.pop("n_errors", None)
        d.update(data)
        return d

    def events(
        self,
        since: float | None = None,
        until: float | None = None,
        action: str | None = None,
        category: str | None = None,
        endpoint: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Events newest first.  ``category`` is ``"S1"`` or ``"kind:S1"``; ``action="allow"`` = no action."""
        where, params = self._where(since, until, action, category, endpoint)
        limit = max(0, int(limit))  # the HTTP API caps it; direct callers may want everything
        rows = self._query(
            f"SELECT e.* FROM events e{where} ORDER BY e.ts DESC, e.id DESC LIMIT ? OFFSET ?",
            [*params, limit, max(0, int(offset))],
        )
        return [self._row(r) for r in rows]

    def event(self, event_id: int) -> dict[str, Any] | None:
        """One event with everything stored about it, or None."""
        rows = self._query("SELECT e.* FROM events e WHERE e.id = ?", (int(event_id),))
        return self._row(rows[0]) if rows else None

    def stats(
        self, since: float | None = None, until: float | None = None, bucket_s: int | None = None
    ) -> dict[str, Any]:
        """Totals, top categories and time series (by action and by category) over a time range."""
        where, params = self._where(since, until)
        t = self._query(
            "SELECT count(*) AS events,"
            " coalesce(sum(e.status = 'screened'), 0) AS screened,"
            " coalesce(sum(e.action = 'block'), 0) AS blocked,"
            " coalesce(sum(e.action = 'log'), 0) AS logged,"
            " coalesce(sum(e.action = 'redact'), 0) AS redacted,"
            " coalesce(sum(e.action IS NULL AND e.status = 'screened'), 0) AS allowed,"
            " coalesce(sum(e.n_not_scored > 0), 0) AS not_scored,"
            " coalesce(sum(e.n_errors > 0), 0) AS errors,"
            " coalesce(sum(e.status NOT IN ('screened', 'response')), 0) AS unparsed,"
            " coalesce(sum(e.status = 'response'), 0) AS responses,"
            " coalesce(sum(e.status = 'response' AND e.action IS NOT NULL), 0) AS responses_acted,"
            " min(e.ts) AS first_ts, max(e.ts) AS last_ts"
            f" FROM events e{where}",
            params,
        )[0]
        totals = {
            k: t[k]
            for k in (
                "events",
                "screened",
                "blocked",
                "logged",
                "redacted",
                "allowed",
                "not_scored",
                "errors",
                "unparsed",
                "responses",
                "responses_acted",
            )
        }
        top = [
            {"kind": r["kind"], "category": r["category"], "count": r["n"]}
            for r in self._query(
                "SELECT c.kind, c.category, count(*) AS n"
                " FROM events e CROSS JOIN event_categories c ON c.event_id = e.id"
                f"{where} GROUP BY c.kind, c.category ORDER BY n DESC, c.kind, c.category LIMIT 10",
                params,
            )
        ]
        end = until if until is not None else (max(time.time(), t["last_ts"] or 0) if t["events"] else None)
        # The chart starts near the first event in range (at least MIN_CHART_SPAN_S before the end):
        # a fresh install's first minutes are not a sliver at the edge of an empty day.
        start = since
        if t["events"] and end is not None:
            start = min(t["first_ts"], end - MIN_CHART_SPAN_S)
            if since is not None:
                start = max(start, since)
        series: dict[str, Any] = {"bucket_s": None, "buckets": [], "by_action": {}, "by_category": {}}
        if start is not None and end is not None and t["events"]:
            b = max(1, int(bucket_s)) if bucket_s else _pick_bucket(end - start)
            if (end - start) / b > 10 * _MAX_BUCKETS:  # a tiny bucket over a long range: coarsen, lose nothing
                b = _pick_bucket(end - start)
            first = int(start // b) * b
            n = min(int((end - first) // b) + 1, 10 * _MAX_BUCKETS)
            buckets = [first + i * b for i in range(n)]
            by_action: dict[str, list[int]] = {}
            for r in self._query(
                f"SELECT CAST(e.ts / ? AS INTEGER) * ? AS bk, coalesce(e.action, 'allow') AS a, count(*) AS n"
                f" FROM events e{where} GROUP BY bk, a",
                [b, b, *params],
            ):
                i = int((r["bk"] - first) // b)
                if 0 <= i < n:
                    by_action.setdefault(r["a"], [0] * n)[i] += r["n"]
            by_cat: dict[str, list[int]] = {}
            top_keys = {(c["kind"], c["category"]) for c in top}
            for r in self._query(
                "SELECT CAST(e.ts / ? AS INTEGER) * ? AS bk, c.kind, c.category, count(*) AS n"
                f" FROM events e CROSS JOIN event_categories c ON c.event_id = e.id{where}"
                " GROUP BY bk, c.kind, c.category",
                [b, b, *params],
            ):
                if (r["kind"], r["category"]) not in top_keys:
                    continue
                i = int((r["bk"] - first) // b)
                if 0 <= i < n:
                    by_cat.setdefault(f"{r['kind']}:{r['category']}", [0] * n)[i] += r["n"]
            series = {"bucket_s": b, "buckets": buckets, "by_action": by_action, "by_category": by_cat}
        return {
            "since": since,
            "until": until,
            "totals": totals,
            "top_categories": top,
            "first_ts": t["first_ts"],
            "last_ts": t["last_ts"],
            "series": series,
        }


def _pick_bucket(span_s: float) -> int:
    """The smallest standard bucket giving at most ``_MAX_BUCKETS`` points over ``span_s``."""
    for b in _BUCKETS:
        if span_s / b <= _MAX_BUCKETS:
            return b
    return _BUCKETS[-1]
