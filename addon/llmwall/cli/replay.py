"""``llmwall replay FLOWS.mitm``: screen recorded traffic offline, through the proxy's own pipeline.

A flow file written by ``mitmdump -w`` (or mitmweb's save) holds an operator's real traffic.
Replaying it through the same addons the proxy runs (``LLMWall`` and the console addon,
in an in-process mitmproxy master, no network) shows the decision a rules file would take on
each LLM request, which is the way to tune a policy on one's own traffic before it goes live.
Nothing is sent anywhere and no analytics are written. With ``--out`` the flows are written
again with llmwall's annotations (marker, comment, ``metadata["llmwall"]``) and their original
responses, for a look in mitmweb (``mitmweb -r annotated.mitm``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mitmproxy import http
    from mitmproxy.master import Master

#: Logger whose errors during set-up mean the replay cannot run (bad rules, missing models).
LLMWALL_LOGGER = "llmwall"


class _Errors(logging.Handler):
    """Collects llmwall's error records while the addons are configured (mitmdump's start-up check does the same)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _collect_errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger(LLMWALL_LOGGER)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def replay(args: argparse.Namespace) -> int:
    # Imported here: mitmproxy's master and the detector libraries cost seconds, and every other
    # llmwall command registers its arguments through this module.
    from mitmproxy import exceptions, hooks, http, io, options
    from mitmproxy.master import Master

    from llmwall.proxy.addon import LLMWall
    from llmwall.proxy.console import PASS, Console, decision_line

    master = Master(options.Options())
    wall, console = LLMWall(), Console()
    master.addons.add(wall, console)
    settings = {
        "llmwall_rules": args.rules,
        "llmwall_models": args.models or "",
        "llmwall_device": args.device,
        "llmwall_deadline_ms": args.deadline_ms,
        "llmwall_turns": args.turns,
        "llmwall_workers": master.options.llmwall_workers,
    }
    with _collect_errors() as errors:
        try:
            master.options.update(**settings)
        except exceptions.OptionsError as exc:
            errors.messages.append(str(exc))
    if errors.messages:
        for message in errors.messages:
            print(message, file=sys.stderr)
        return 2
    counts: Counter[str] = Counter()
    try:
        with open(args.flows, "rb") as fh, contextlib.ExitStack() as stack:
            writer = io.FlowWriter(stack.enter_context(open(args.out, "wb"))) if args.out else None
            for flow in io.FlowReader(fh).stream():
                counts["flows"] += 1
                if isinstance(flow, http.HTTPFlow):
                    meta = await _screen(master, flow)
                    if meta is not None:
                        counts[str(meta.get("action") or PASS)] += 1
                        print(json.dumps({"flow": flow.id, **meta}) if args.json else decision_line(meta), flush=True)
                if writer:
                    writer.add(flow)
    except (OSError, exceptions.FlowReadException) as exc:
        print(f"llmwall replay: {args.flows}: {exc}", file=sys.stderr)
        return 2
    finally:
        await master.addons.trigger_event(hooks.DoneHook())
    screened = sum(v for k, v in counts.items() if k != "flows")
    by_action = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "flows")
    print(
        f"llmwall replay: {counts['flows']} flows, {screened} LLM requests screened"
        + (f" ({by_action})" if by_action else "")
        + (f"; annotated flows written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return 0


async def _screen(master: Master, flow: http.HTTPFlow) -> dict | None:
    """Run a copy of ``flow``'s request through the addons; annotate ``flow``; return the decision."""
    from mitmproxy.proxy.layers.http import HttpRequestHook

    from llmwall.proxy.console import METADATA_KEY

    probe = flow.copy()
    probe.response = None  # as the proxy sees it: before the upstream answered
    # The proxy's deadline runs from the request's arrival: offline, it arrives now.
    probe.request.timestamp_start = probe.request.timestamp_end = time.time()
    probe.metadata.pop(METADATA_KEY, None)
    probe.comment, probe.marked = "", ""
    await master.addons.handle_lifecycle(HttpRequestHook(probe))
    meta = probe.metadata.get(METADATA_KEY)
    if meta is None:
        return None
    flow.comment, flow.marked = probe.comment, probe.marked
    flow.metadata[METADATA_KEY] = dict(meta)
    return flow.metadata[METADATA_KEY]


def cmd_replay(args: argparse.Namespace) -> int:
    if not Path(args.flows).is_file():
        print(f"llmwall replay: no such flow file: {args.flows}", file=sys.stderr)
        return 2
    return asyncio.run(replay(args))


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add ``replay FLOWS.mitm [--rules R] [--out annotated.mitm]``."""
    p = subparsers.add_parser(
        "replay",
        help="screen the LLM requests of a recorded flow file (mitmdump -w) offline and print the decisions",
        description=(
            "Read a mitmproxy flow file, screen every LLM request in it through llmwall's pipeline offline "
            "(nothing is sent, nothing is stored) and print one decision line per request."
        ),
    )
    p.add_argument("flows", metavar="FLOWS.mitm", help="flow file written by mitmdump -w or saved from mitmweb")
    p.add_argument("--rules", default="rules.yaml", help="rules file (default: rules.yaml)")
    p.add_argument("--out", metavar="ANNOTATED.mitm", help="write the flows again with llmwall's annotations")
    p.add_argument("--models", help="models directory (default: the models shipped with llmwall)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--deadline-ms", type=int, default=2000, help="per-request deadline, as in the proxy (default 2000)")
    p.add_argument(
        "--turns",
        choices=("all", "conversation", "latest"),
        default="all",
        help="which turns to screen, as the proxy's llmwall_turns option (default: all)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per screened request")
    p.set_defaults(func=cmd_replay)
