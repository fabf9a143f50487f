"""The ``llmwall`` console script.

``proxy`` runs mitmdump with the addon; ``scan`` screens text without a proxy.
Other modules add their own subcommands through ``register_cli(subparsers)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from importlib import import_module
from pathlib import Path

from llmwall import bundled, fields
from llmwall.categories import labels
from llmwall.detectors import build_detectors
from llmwall.detectors.base import Detector, DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.fields import INJECTION_FIELDS, UNSAFE_FIELDS
from llmwall.providers import discovery, extraction
from llmwall.proxy.orchestrator import Orchestrator

#: Modules that contribute subcommands (rules, eval, endpoints/stats, demo).
CLI_MODULES = (
    "llmwall.cli.rules",
    "llmwall.cli.evaluate",
    "llmwall.cli.replay",
    "llmwall.cli.analytics",
    "llmwall.demo.launch",
)
ENTRY = Path(__file__).resolve().parent.parent / "mitm_entry.py"
HELP_FLAGS = frozenset({"-h", "--help"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["proxy"]:
        # Everything after "proxy" belongs to mitmdump, options included.
        return cmd_proxy(argparse.Namespace(args=argv[1:]))
    parser = argparse.ArgumentParser(prog="llmwall", description="A firewall for LLM traffic.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "proxy", help="run mitmdump with llmwall loaded; every argument after it goes to mitmdump", add_help=False
    )

    scan = sub.add_parser("scan", help="screen prompts without a proxy and print the fields as JSON")
    src = scan.add_mutually_exclusive_group(required=True)
    src.add_argument("text", nargs="?", help="the prompt text")
    src.add_argument("--file", help="one prompt per line, or JSONL with a 'text' key ('-' for stdin)")
    src.add_argument("--request", help="a provider request body (JSON) to parse first")
    scan.add_argument(
        "--path", default="/v1/chat/completions", help="request path used with --request to tell formats apart"
    )
    scan.add_argument("--models", help="models directory (default: the models shipped with llmwall)")
    scan.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    scan.add_argument("--deadline-ms", type=int, default=10_000, help="per-prompt deadline (default 10000)")
    scan.add_argument("--custom-topics", help="rules.yaml whose custom_topics to score")
    scan.set_defaults(func=cmd_scan)

    for name in CLI_MODULES:
        import_module(name).register_cli(sub)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def cmd_proxy(args: argparse.Namespace) -> int:
    """Replace this process with mitmdump running the addon, passing every argument through."""
    mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if mitmdump is None:
        print("llmwall: mitmdump not found; install mitmproxy 12 into this environment", file=sys.stderr)
        return 2
    if HELP_FLAGS & set(args.args):
        from llmwall.cli import proxy_help

        sys.stdout.flush()
        subprocess.run([mitmdump, "--help"], check=False)  # mitmdump's own options first, ours last
        print(f"\nusage: llmwall proxy [mitmdump options]: mitmdump with llmwall loaded ({ENTRY})\n")
        print(proxy_help.help_text(proxy_help.llmwall_options()))
        return 0
    os.execv(mitmdump, [mitmdump, "-s", str(ENTRY), *args.args])
    return 0  # not reached


def cmd_scan(args: argparse.Namespace) -> int:
    config = DetectorConfig(models_dir=bundled.resolve_models(args.models), device=args.device)
    detectors = build_detectors(config)
    _report_detectors(detectors, config.models_dir)
    topics: dict[str, str] = {}
    if args.custom_topics:
        from llmwall.rules import RulesError, load_rules

        try:
            topics = load_rules(args.custom_topics).custom_topics
        except RulesError as exc:
            print(f"llmwall scan: {exc}", file=sys.stderr)
            return 2
    try:
        prompts = list(_scan_inputs(args))
    except (OSError, ValueError) as exc:
        print(f"llmwall scan: {exc}", file=sys.stderr)
        return 2
    wanted = frozenset().union(*(d.provides for d in detectors)) if detectors else frozenset()
    try:
        asyncio.run(_scan_all(prompts, detectors, wanted, topics, args.deadline_ms))
    finally:
        for det in detectors:
            det.close()
    return 0


def _report_detectors(detectors: list[Detector], models_dir: str) -> None:
    """Say on stderr which detectors run, and which field groups nothing fills (stdout stays JSON)."""
    print(f"llmwall scan: models from {models_dir}", file=sys.stderr)
    for det in detectors:
        print(f"llmwall scan: detector {det.describe()}", file=sys.stderr)
    provided = frozenset().union(*(d.provides for d in detectors)) if detectors else frozenset()
    for group, what in ((UNSAFE_FIELDS, "unsafe-topic"), (INJECTION_FIELDS, "injection")):
        if not group & provided:
            print(f"llmwall scan: no {what} detector found in {models_dir}; its fields are omitted", file=sys.stderr)


async def _scan_all(
    prompts: Iterable[Prompt],
    detectors: list[Detector],
    wanted: frozenset[str],
    topics: dict[str, str],
    deadline_ms: int,
) -> None:
    orchestrator = Orchestrator(workers=max(4, len(detectors)))
    try:
        for prompt in prompts:
            start = time.monotonic()
            request = ScreenRequest(prompt, start + deadline_ms / 1000.0, wanted, topics)
            result = await orchestrator.screen(request, detectors)
            out = {
                fields.PROMPT_DETECTED: bool(prompt.text.strip()),
                fields.REQUEST_FORMAT: prompt.format,
                **result.fields,
                "unsafe_topic_names": labels(result.fields.get(fields.UNSAFE_TOPIC_CATEGORIES) or []),  # type: ignore[arg-type]
                "timings_ms": result.timings_ms,
                "total_ms": round((time.monotonic() - start) * 1000.0, 3),
                "not_scored": result.not_scored,
                "errors": result.errors,
            }
            print(json.dumps(out, sort_keys=False), flush=True)
    finally:
        orchestrator.close()


def _scan_inputs(args: argparse.Namespace) -> Iterator[Prompt]:
    if args.text is not None:
        yield _text_prompt(args.text)
    elif args.request:
        raw = Path(args.request).read_bytes()
        parsed = discovery.parse_body(raw, "application/json")
        if parsed.error:
            raise ValueError(f"{args.request}: cannot parse body: {parsed.error}")
        fmt = discovery.classify("POST", args.path, parsed.data)
        if fmt is None:
            yield extraction.extract_all_strings(parsed.data)
        else:
            yield extraction.extract(fmt, parsed.data)
    else:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            for lineno, line in enumerate(stream, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if line.lstrip().startswith("{"):
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{args.file}:{lineno}: invalid JSON: {exc.msg}") from None
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise ValueError(f"{args.file}:{lineno}: JSON line without a string 'text' key")
                    line = record["text"]
                yield _text_prompt(line)


def _text_prompt(text: str) -> Prompt:
    return Prompt(format="text", parts=(TextPart(path=(), text=text, role="user"),))


if __name__ == "__main__":
    sys.exit(main())
