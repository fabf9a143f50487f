"""Read-only dashboard: served inside the proxy on a reserved host, and optionally on a local port.

One router answers both ways (mitmproxy flows and a stdlib HTTP server) so the two
cannot drift.  The HTML pages are static files; every value from traffic reaches
the browser only as JSON and is put into the page with ``textContent`` by the
page's script, so an endpoint path like ``/<script>`` stays text.  A strict
Content-Security-Policy (scripts from 'self' only) backs that up.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

from mitmproxy import ctx, exceptions, http

from llmwall.analytics.metrics import Metrics
from llmwall.analytics.store import Store, parse_duration

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DEFAULT_HOST: Final = "llmwall.localhost"
COOKIE: Final = "llmwall_token"
#: Page paths -> the static HTML file that renders them (data comes from /api/...).
PAGES: Final = {"/": "index.html", "/index.html": "index.html"}
_EVENT_PAGE = re.compile(r"^/event/(\d{1,18})$")
_API_EVENT = re.compile(r"^/api/event/(\d{1,18})$")
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{8,512}$")  # usable as is in a header, a query and a cookie
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass
class Reply:
    """A response independent of the transport."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, obj: object) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":")).encode(), {"Content-Type": "application/json"})


def _text(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


class Dashboard:
    """Routes dashboard requests to the store and metrics; never forwards them upstream."""

    def __init__(self, store: Store, metrics: Metrics, token: str | None = None, host: str = DEFAULT_HOST) -> None:
        self.store = store
        self.metrics = metrics
        if token and not _TOKEN.match(token):
            raise ValueError("dashboard token must be 8-512 characters of A-Z a-z 0-9 . _ ~ -")
        self.token = token or None
        self.host = host.lower()
        # Read once: only these names can ever be served from static/ (no path traversal possible).
        self._static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()} if STATIC_DIR.is_dir() else {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._allowed_hosts: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ mitmproxy

    def handles(self, flow: http.HTTPFlow) -> bool:
        """Whether ``flow`` is for the dashboard's reserved host (any port)."""
        return flow.request.pretty_host.lower() == self.host

    def maybe_serve(self, flow: http.HTTPFlow) -> bool:
        """Answer ``flow`` locally when it is for the dashboard host; True when it did."""
        if not self.handles(flow):
            return False
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        try:
            reply = self.route(flow.request.method, flow.request.path, headers)
        except Exception as exc:  # a dashboard bug must not break the proxy
            reply = _text(500, f"dashboard error: {type(exc).__name__}")
        body = b"" if flow.request.method == "HEAD" else reply.body
        flow.response = http.Response.make(reply.status, body, {**SECURITY_HEADERS, **reply.headers})
        return True

    async def maybe_serve_async(self, flow: http.HTTPFlow) -> bool:
        """``maybe_serve`` with the database work in a thread, for mitmproxy's async hooks.

        Stats over a large database take tens to hundreds of milliseconds; run on the
        event loop they would stall every other flow for that long.
        """
        if not self.handles(flow):
            return False
        return await asyncio.to_thread(self.maybe_serve, flow)

    # ------------------------------------------------------------------ router

    def route(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        """Answer one request; ``headers`` keys are lower-case.  HEAD bodies are stripped by the caller."""
        if method not in ("GET", "HEAD"):
            r = _text(405, "the dashboard is read-only\n")
            r.headers["Allow"] = "GET, HEAD"
            return r
        parts = urlsplit(target)
        path, query = parts.path or "/", parse_qs(parts.query, keep_blank_values=True)
        denied = self._check_token(path, query, headers)
        if denied is not None:
            return denied
        if path in PAGES:
            return self._static_file(PAGES[path])
        if _EVENT_PAGE.match(path):
            return self._static_file("event.html")
        if path.startswith("/static/"):
            return self._static_file(path[len("/static/") :])
        if path == "/metrics":
            body, ctype = self.metrics.render()
            return Reply(200, body, {"Content-Type": ctype})
        if path.startswith("/api/"):
            try:
                return self._api(path, query)
            except ValueError as exc:
                return _json(400, {"error": str(exc)})
        return _text(404, "not found\n")

    def _check_token(self, path: str, query: dict[str, list[str]], headers: Mapping[str, str]) -> Reply | None:
        """None when allowed; else 401, or a redirect that trades ``?token=`` for a cookie."""
        if self.token is None:
            return None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), self.token):
            return None
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and _same(value, self.token):
                return None
        given = query.get("token", [""])[0]
        if given and _same(given, self.token):
            rest = {k: v for k, v in query.items() if k != "token"}
            location = path + ("?" + urlencode(rest, doseq=True) if rest else "")
            return Reply(
                303,
                b"",
                {
                    "Location": location,
                    "Set-Cookie": f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict",
                },
            )
        r = _text(401, "llmwall dashboard: token required (Authorization: Bearer <token>, or open /?token=<token>)\n")
        r.headers["WWW-Authenticate"] = 'Bearer realm="llmwall"'
        return r

    def _static_file(self, name: str) -> Reply:
        p = self._static.get(name)
        if p is None:
            return _text(404, "not found\n")
        ctype = _TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        headers = {"Content-Type": ctype}
        if p.suffix in (".js", ".css"):
            headers["Cache-Control"] = "max-age=300"
        return Reply(200, p.read_bytes(), headers)

    def _api(self, path: str, q: dict[str, list[str]]) -> Reply:
        def arg(name: str) -> str | None:
            v = q.get(name, [""])[0].strip()
            return v or None

        since, until = _time_range(arg("since"), arg("until"), arg("range"))
        if path == "/api/stats":
            bucket = arg("bucket")
            st = self.store.stats(since=since, until=until, bucket_s=int(parse_duration(bucket)) if bucket else None)
            st["now"] = time.time()
            return _json(200, st)
        if path == "/api/events":
            limit = _int(arg("limit"), 50, 1, 500)
            offset = _int(arg("offset"), 0, 0, 10**9)
            rows = self.store.events(
                since=since,
                until=until,
                action=arg("action"),
                category=arg("category"),
                endpoint=arg("endpoint"),
                limit=limit,
                offset=offset,
            )
            return _json(200, {"events": rows, "limit": limit, "offset": offset})
        if path == "/api/endpoints":
            return _json(200, {"endpoints": self.store.endpoints()})
        m = _API_EVENT.match(path)
        if m:
            ev = self.store.event(int(m.group(1)))
            return _json(200, ev) if ev is not None else _json(404, {"error": "no such event"})
        return _json(404, {"error": "unknown API path"})

    # ------------------------------------------------------------------ local port

    def start_server(self, port: int, bind: str = "127.0.0.1") -> None:
        """Serve the same pages on ``bind:port`` from a daemon thread; non-loopback needs a token."""
        if not _is_loopback(bind) and self.token is None:
            raise ValueError(
                f"refusing to expose the dashboard on {bind} without a token "
                "(set llmwall_dashboard_token, or bind to 127.0.0.1)"
            )
        self.stop_server()
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "llmwall"
            sys_version = ""

            def _handle(self) -> None:
                host = (self.headers.get("host") or "").lower()
                if dashboard._allowed_hosts and host not in dashboard._allowed_hosts:
                    # DNS-rebinding guard: a page on evil.example resolving to 127.0.0.1 is refused.
                    reply = _text(421, "unexpected Host header\n")
                else:
                    hdrs = {k.lower(): v for k, v in self.headers.items()}
                    try:
                        reply = dashboard.route(self.command, self.path, hdrs)
                    except Exception as exc:
                        reply = _text(500, f"dashboard error: {type(exc).__name__}")
                self.send_response(reply.status)
                for k, v in {**SECURITY_HEADERS, **reply.headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Silent: request lines may carry ``?token=``, which must not reach logs."""

        server = ThreadingHTTPServer((bind, port), Handler)
        server.daemon_threads = True
        real_port = server.server_address[1]
        if _is_loopback(bind):
            names = ("127.0.0.1", "localhost", "[::1]", self.host)
            self._allowed_hosts = frozenset([*names, *(f"{n}:{real_port}" for n in names)])
        else:
            self._allowed_hosts = frozenset()  # exposed on purpose; the token protects it
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="llmwall-dashboard", daemon=True)
        self._thread.start()

    @property
    def server_port(self) -> int | None:
        """The bound port of the local server (useful with port 0), or None."""
        return self._server.server_address[1] if self._server else None

    def stop_server(self) -> None:
        """Stop the local server, if running."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def _int(v: str | None, default: int, lo: int, hi: int) -> int:
    if v is None:
        return default
    try:
        return max(lo, min(hi, int(v)))
    except ValueError:
        raise ValueError(f"not an integer: {v!r:.20}") from None


def _time_range(since: str | None, until: str | None, rng: str | None) -> tuple[float | None, float | None]:
    """``since``/``until`` are unix seconds; ``range`` (``1h``, ``7d``) means "the last ..."."""

    def num(name: str, v: str | None) -> float | None:
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{name}: expected unix seconds") from None

    s, u = num("since", since), num("until", until)
    if rng is not None and rng != "all":
        s = time.time() - parse_duration(rng)
    return s, u


# --------------------------------------------------------------------------- the addon

DASHBOARD_OPTIONS: Final = frozenset({"llmwall_dashboard_port", "llmwall_dashboard_bind", "llmwall_dashboard_token"})


class AnalyticsSource(Protocol):
    """What the dashboard needs from the analytics addon (``analytics.addon.Analytics``)."""

    store: Store | None
    metrics: Metrics

    def on_store_change(self, callback: Callable[[], None]) -> None: ...


class DashboardAddon:
    """Serves the dashboard, as mitmproxy's ``Onboarding`` addon serves its app.

    First in the addon chain: a request for the reserved host is answered here and
    never reaches screening or the upstream. It owns the dashboard options and
    reads the analytics addon's store and metrics; it is rebuilt when either its
    options or the store change. Without a store (``llmwall_db`` empty) there is no
    dashboard.
    """

    def __init__(self, analytics: AnalyticsSource) -> None:
        self.analytics = analytics
        self.dashboard: Dashboard | None = None
        analytics.on_store_change(self._restart)

    def load(self, loader: Any) -> None:
        loader.add_option(
            "llmwall_dashboard_port",
            int,
            0,
            "Also serve the dashboard on this local port (0: only at http://llmwall.localhost/ through the proxy).",
        )
        loader.add_option(
            "llmwall_dashboard_bind", str, "127.0.0.1", "Address for the dashboard port; non-loopback requires a token."
        )
        loader.add_option("llmwall_dashboard_token", str | None, None, "Bearer token required by the dashboard.")

    def configure(self, updated: set[str]) -> None:
        if updated & DASHBOARD_OPTIONS:
            self._restart()

    def _restart(self) -> None:
        if self.dashboard:
            self.dashboard.stop_server()
            self.dashboard = None
        store = self.analytics.store
        if store is None:
            return
        opts = ctx.options
        try:
            self.dashboard = Dashboard(store, self.analytics.metrics, token=opts.llmwall_dashboard_token)
            if opts.llmwall_dashboard_port:
                self.dashboard.start_server(opts.llmwall_dashboard_port, opts.llmwall_dashboard_bind)
        except (OSError, ValueError) as exc:
            raise exceptions.OptionsError(f"llmwall: dashboard: {exc}") from None
        if opts.llmwall_dashboard_port:
            log.info("llmwall: dashboard on http://%s:%d/", opts.llmwall_dashboard_bind, opts.llmwall_dashboard_port)

    async def request(self, flow: http.HTTPFlow) -> None:
        if self.dashboard and not flow.response:
            await self.dashboard.maybe_serve_async(flow)

    def done(self) -> None:
        if self.dashboard:
            self.dashboard.stop_server()
