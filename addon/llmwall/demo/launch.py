"""``llmwall demo``: a mock LLM, llmwall in front of it, a chat page and the dashboard.

Ports: N = mock LLM (also serves the chat page), N+1 = mitmdump in reverse-proxy
mode with llmwall (the URL to open: page and API share this origin), N+2 = the
dashboard.  The mock runs in this process; mitmdump is a child process so the demo
exercises the same addon entry point as a real deployment.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from typing import Any, Final

from llmwall import bundled
from llmwall.demo import mock_llm

PACKAGE_DIR: Final = Path(__file__).resolve().parent
ENTRY: Final = PACKAGE_DIR.parent / "mitm_entry.py"
DEMO_RULES: Final = PACKAGE_DIR / "demo_rules.yaml"
DEFAULT_PORT: Final = 8800
DEMO_DB: Final = "~/.llmwall/demo.sqlite"
START_TIMEOUT_S: Final = 180.0  # loading the embedded models on a busy laptop can take a while


class DemoError(Exception):
    """A demo that cannot start, with a message for the user."""


def default_models_dir() -> str:
    """``$LLMWALL_MODELS``, else the models shipped with llmwall."""
    return bundled.resolve_models(os.environ.get("LLMWALL_MODELS"))


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _mitmdump() -> str:
    exe = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or shutil.which("mitmdump")
    if exe is None:
        raise DemoError("mitmdump not found; install mitmproxy 12 into this environment")
    return exe


def _wait_http(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll ``url`` until it answers 200, the child exits, or ``deadline`` passes."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"mitmdump exited with status {proc.returncode} while starting (see its output above)")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise DemoError(f"{url} did not answer within {START_TIMEOUT_S:.0f} s")


class Demo:
    """The running demo: mock, proxy and dashboard; ``stop()`` tears everything down."""

    def __init__(self, port: int, rules: str, db: str, models: str) -> None:
        if not 1 <= port <= 65533:
            raise DemoError("--port must leave room for three ports (1-65533)")
        busy = [p for p in (port, port + 1, port + 2) if not _port_free(p)]
        if busy:
            raise DemoError(f"port(s) {', '.join(map(str, busy))} are in use; pick others with --port")
        if not Path(rules).is_file():
            raise DemoError(f"rules file not found: {rules}")
        self.port = port
        self.rules, self.db, self.models = rules, os.path.expanduser(db), models
        self.chat_url = f"http://127.0.0.1:{port + 1}/"
        self.dashboard_url = f"http://127.0.0.1:{port + 2}/"
        self.mock_url = f"http://127.0.0.1:{port}/"
        self.mock: Any = None
        self.proxy: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the mock and mitmdump, and wait until both the chat page and the dashboard answer."""
        Path(self.db).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.mock = mock_llm.serve(self.port, dashboard_url=self.dashboard_url)
        cmd = [
            _mitmdump(),
            "--mode",
            f"reverse:{self.mock_url.rstrip('/')}",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(self.port + 1),
            "-s",
            str(ENTRY),
            "--set",
            f"llmwall_rules={self.rules}",
            "--set",
            f"llmwall_db={self.db}",
            "--set",
            f"llmwall_models={self.models}",
            "--set",
            f"llmwall_dashboard_port={self.port + 2}",
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        # Own process group: Ctrl-C in the terminal reaches us, and we stop mitmdump in order.
        self.proxy = subprocess.Popen(cmd, env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        _wait_http(self.chat_url + "v1/models", self.proxy, deadline)
        _wait_http(self.dashboard_url + "api/stats", self.proxy, deadline)

    def stop(self) -> None:
        """Stop mitmdump (SIGTERM, then SIGKILL) and the mock; safe to call twice."""
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait(timeout=5)
        self.proxy = None
        if self.mock is not None:
            self.mock.shutdown()
            self.mock.server_close()
            self.mock = None


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C / SIGTERM or until mitmdump exits."""
    demo = None
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        demo = Demo(args.port, args.rules, args.db, args.models or default_models_dir())
        print(f"llmwall demo: starting the mock LLM on {demo.mock_url} and llmwall (loading models)...", flush=True)
        demo.start()
        print(
            "\nllmwall demo is running:\n"
            f"  chat page  {demo.chat_url}\n"
            f"  dashboard  {demo.dashboard_url}\n"
            f"  API        {demo.chat_url}v1/chat/completions (OpenAI-compatible, through llmwall)\n"
            f"  metrics    {demo.dashboard_url}metrics\n"
            f"  events db  {demo.db}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        if not args.no_browser:
            webbrowser.open(demo.chat_url)
        while not stop.is_set():
            assert demo.proxy is not None
            if demo.proxy.poll() is not None:
                print(f"llmwall demo: mitmdump exited with status {demo.proxy.returncode}", file=sys.stderr)
                return 1
            stop.wait(0.5)
        print("llmwall demo: stopping", flush=True)
        return 0
    except DemoError as exc:
        print(f"llmwall demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if demo is not None:
            demo.stop()
        for s, h in previous.items():
            signal.signal(s, h)


def register_cli(subparsers: Any) -> None:
    """Add ``demo`` to the ``llmwall`` command."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run a mock LLM behind llmwall with a chat page and the dashboard"
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"first of three ports: mock LLM, proxy/chat page, dashboard (default {DEFAULT_PORT})",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--rules", default=str(DEMO_RULES), help="rules file (default: the demo rules)")
    p.add_argument("--db", default=DEMO_DB, help=f"event database for the demo (default {DEMO_DB})")
    p.add_argument("--models", help="models directory (default: $LLMWALL_MODELS or the checkout's models/)")
    p.set_defaults(func=cmd_demo)


def _main(argv: list[str] | None = None) -> int:
    """``python -m llmwall.demo.launch``: the same as ``llmwall demo`` without the other subcommands."""
    parser = argparse.ArgumentParser(prog="llmwall")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(_main())
