"""``llmwall endpoints`` and ``llmwall stats``: the analytics store, printed for a terminal.

The store (``analytics/store.py``) only reads and writes; tables and JSON for people live here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from llmwall.analytics.store import DEFAULT_DB, Store, parse_duration


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _open_existing(db: str) -> Store | None:
    path = os.path.expanduser(db)
    if not os.path.exists(path):
        print(f"llmwall: no database at {path} (run the proxy first, or pass --db)", file=sys.stderr)
        return None
    return Store(path)


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip())


def cmd_endpoints(args: argparse.Namespace) -> int:
    """``llmwall endpoints``: the endpoint inventory."""
    store = _open_existing(args.db)
    if store is None:
        return 1
    try:
        eps = store.endpoints()
    finally:
        store.close()
    if args.json:
        print(json.dumps(eps, indent=2))
        return 0
    if not eps:
        print("no LLM endpoints seen yet")
        return 0
    _print_table(
        ["HOST", "METHOD", "PATH", "FORMAT", "FIRST SEEN", "LAST SEEN", "REQUESTS", "CONFIRMED"],
        [
            [
                e["host"],
                e["method"],
                e["path_template"],
                e["format"] or "-",
                _fmt_ts(e["first_seen"]),
                _fmt_ts(e["last_seen"]),
                str(e["request_count"]),
                {None: "-", True: "yes", False: "no"}[e["confirmed"]],
            ]
            for e in eps
        ],
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """``llmwall stats``: the dashboard's totals and top categories."""
    try:
        since = time.time() - parse_duration(args.since) if args.since else None
    except ValueError as e:
        print(f"llmwall: --since: {e}", file=sys.stderr)
        return 2
    store = _open_existing(args.db)
    if store is None:
        return 1
    try:
        st = store.stats(since=since)
    finally:
        store.close()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(
        f"events {_fmt_ts(st['first_ts'])} .. {_fmt_ts(st['last_ts'])}"
        + (f" (since {args.since})" if args.since else "")
    )
    _print_table(["TOTAL", "COUNT"], [[k, str(v)] for k, v in st["totals"].items()])
    if st["top_categories"]:
        print()
        _print_table(
            ["KIND", "CATEGORY", "COUNT"], [[c["kind"], c["category"], str(c["count"])] for c in st["top_categories"]]
        )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``endpoints`` and ``stats`` to the ``llmwall`` command (each sets ``func(args) -> int``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "endpoints",
        help="list the LLM endpoints seen (inventory)",
        description="List the LLM endpoints the proxy has discovered, with format, first and last seen, request "
        "count and whether a response confirmed the format, from the event database.",
    )
    p.add_argument("--db", default=DEFAULT_DB, help=f"event database (default {DEFAULT_DB})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_endpoints)
    p = subparsers.add_parser(
        "stats",
        help="totals of screened/blocked/logged requests and top categories",
        description="Print the dashboard's totals (screened, blocked, redacted, logged, allowed, not scored, "
        "unparsed) and the most frequent detected categories from the event database.",
    )
    p.add_argument("--db", default=DEFAULT_DB, help=f"event database (default {DEFAULT_DB})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--since", help="only the last period, e.g. 15m, 1h, 7d")
    p.set_defaults(func=cmd_stats)


def _main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m llmwall.cli.analytics stats``), besides ``llmwall stats``."""
    parser = argparse.ArgumentParser(prog="llmwall")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(_main())
