"""Security regression suite, one test per finding of issue 12 that needs its own proxy
setup: regular-mode Host spoofing (row 3), decompression bombs (4), overload (5),
request streaming (6), rules reloads (10) and audit records (11). Each drives a real
mitmdump; the evasion table (rows 1, 2, 7, 8) is test_security_evasion.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote_plus, urlsplit

from conftest import SUPPORT, FakeUpstream, Proxy, launch_proxy, post, stop_process
from security_support import UNSAFE, h2_post, raw_upstream, send, send_chunked
from test_proxy import events

from llmwall.proxy.addon import UNRECOGNISED
from llmwall.rules import RulesWatcher

CHAT = "/v1/chat/completions"


def chat(content: str, model: str = "m") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()


def peak_rss_mb(proxy: Proxy) -> float:
    """The mitmdump process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{proxy.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# ----------------------------------------------------------------------------- row 3


def _via_regular_proxy(proxy: Proxy, upstream: FakeUpstream, host_header: str, body: bytes | None = None) -> int:
    """POST in absolute form (as to a forward proxy) to the fake upstream, with this Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.putrequest("POST", f"{upstream.url}{CHAT}", skip_host=True, skip_accept_encoding=True)
        body = chat(UNSAFE) if body is None else body
        for name, value in (("host", host_header), ("content-type", "application/json")):
            conn.putheader(name, value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


def test_row3_exclude_matches_the_real_destination_not_the_host_header(tmp_path: Path, upstream: FakeUpstream) -> None:
    proxy = launch_proxy(tmp_path, upstream, mode="regular", llmwall_exclude="internal.example/*")
    try:
        # The client names an excluded host, but mitmproxy connects to 127.0.0.1: screened.
        assert _via_regular_proxy(proxy, upstream, "internal.example") == 403
        assert upstream.received == []
    finally:
        stop_process(proxy.process)
    # Control: excluding the real destination does skip screening.
    proxy = launch_proxy(tmp_path, upstream, mode="regular", llmwall_exclude="127.0.0.1/*")
    try:
        assert _via_regular_proxy(proxy, upstream, "internal.example") == 200
    finally:
        stop_process(proxy.process)


@contextlib.contextmanager
def forward_proxy() -> Iterator[list[tuple[str, str]]]:
    """A minimal HTTP forward proxy on a free loopback port, for mitmproxy's upstream mode.

    Like any forward proxy (RFC 9112 section 3.2.2) it connects to the host of the
    absolute-form request target and ignores the Host header; it records (target, Host
    header) of each request and relays the answer. The list it yields carries its port
    as ``forward_proxy.port`` on the function, set before yielding.
    """
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            target = urlsplit(self.path)
            seen.append((self.path, self.headers.get("host", "")))
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            conn = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                conn.request("POST", target.path or "/", body, headers)
                resp = conn.getresponse()
                payload = resp.read()
            finally:
                conn.close()
            self.send_response(resp.status)
            self.send_header("content-type", resp.getheader("content-type", "application/json"))
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    forward_proxy.port = server.server_address[1]  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def test_row3_upstream_mode_matches_the_request_target_not_the_host_header(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Upstream mode: mitmproxy hands every request to a forward proxy, which goes where the
    request target says (here the fake upstream on 127.0.0.1), whatever the Host header says."""
    with forward_proxy() as seen:
        mode = f"upstream:http://127.0.0.1:{forward_proxy.port}"  # type: ignore[attr-defined]
        proxy = launch_proxy(tmp_path, upstream, mode=mode, llmwall_exclude="internal.example/*")
        try:
            assert _via_regular_proxy(proxy, upstream, "internal.example") == 403
            assert seen == [] and upstream.received == []
            assert events(proxy, 1)[0]["host"] == "127.0.0.1"  # recorded under the real destination
        finally:
            stop_process(proxy.process)
        # Control: the request really goes through the forward proxy to the target, and
        # excluding that target does skip screening.
        proxy = launch_proxy(tmp_path, upstream, mode=mode, llmwall_exclude="127.0.0.1/*")
        try:
            assert _via_regular_proxy(proxy, upstream, "internal.example") == 200
            assert seen == [(f"{upstream.url}{CHAT}", "internal.example")]
            assert upstream.received[-1].body == chat(UNSAFE)
        finally:
            stop_process(proxy.process)
        # Include forces screening (a body in no known format is screened as custom) when it
        # names the real destination. It also honours the Host header, deliberately: that can
        # only add screening (in transparent mode request.host is an IP address, and the Host
        # header is what names the service), so a client gains nothing by spoofing it.
        odd = json.dumps({"q": UNSAFE}).encode()
        for include in ("127.0.0.1/*", "internal.example/*"):
            proxy = launch_proxy(tmp_path, upstream, mode=mode, llmwall_include=include)
            try:
                assert _via_regular_proxy(proxy, upstream, "internal.example", odd) == 403
            finally:
                stop_process(proxy.process)
        assert len(seen) == 1


def test_row3_reverse_mode_matches_the_reverse_target_whatever_the_host_header(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Reverse mode (the docs: include/exclude match where mitmproxy connects): the destination
    is the configured target, so a client's Host header, kept or rewritten, changes nothing."""
    for keep in ("false", "true"):
        proxy = launch_proxy(tmp_path, upstream, llmwall_exclude="internal.example/*", keep_host_header=keep)
        try:
            status, _ = send(proxy.port, "POST", CHAT, chat(UNSAFE), {"host": "internal.example"})
            assert status == 403 and upstream.received == []
        finally:
            stop_process(proxy.process)
    proxy = launch_proxy(tmp_path, upstream, llmwall_exclude="127.0.0.1/*", keep_host_header="true")
    try:
        status, _ = send(proxy.port, "POST", CHAT, chat(UNSAFE), {"host": "internal.example"})
        assert status == 200 and upstream.received[-1].headers["host"] == "internal.example"
    finally:
        stop_process(proxy.process)


def test_row3_exclude_cannot_be_reached_with_dot_segments(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(llmwall_exclude="127.0.0.1/health/*")
    status, _, _ = post(proxy.url + "/health/../v1/chat/completions", chat(UNSAFE))
    assert status == 403 and upstream.received == []


# ----------------------------------------------------------------------------- row 4


def gzip_bomb(inflated_mb: int, head: bytes) -> bytes:
    """A gzip stream of ``head`` followed by spaces, inflating to ``inflated_mb`` MiB, built in slices."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(head)]
    block = b" " * (1 << 20)
    out += [comp.compress(block) for _ in range(inflated_mb)]
    out.append(comp.flush())
    return b"".join(out)


def test_row4_decompression_bomb_is_never_inflated(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy()
    bomb = gzip_bomb(1024, b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "pad": "')
    assert len(bomb) < 2 * 1024 * 1024  # about 1 MB on the wire, 1 GiB inflated
    for _ in range(3):
        status, _, _ = post(proxy.url + CHAT, bomb, {"content-encoding": "gzip"})
        assert status == 403  # auto: an upstream could inflate it, llmwall did not read it all
    assert upstream.received == []
    assert peak_rss_mb(proxy) < 600
    assert {e["status"] for e in events(proxy, 3)} == {"oversize"}
    # Failing open is still a choice: the bomb then passes unaltered, with memory still bounded.
    proxy = start_proxy(llmwall_on_unparsed="pass")
    status, _, _ = post(proxy.url + CHAT, bomb, {"content-encoding": "gzip"})
    assert status == 200 and upstream.received[-1].body == bomb
    assert peak_rss_mb(proxy) < 600


# ----------------------------------------------------------------------------- row 5

PACED_RULES = """\
rules:
  - id: paced-unscored
    expression: any(cf.llm.prompt.failed_detections[*] == "paced")
    action: block
  - id: injection
    expression: cf.llm.prompt.injection_score lt 20
    action: log
"""


def test_row5_requests_over_capacity_are_answered_at_once_and_rules_see_failed_detections(
    start_proxy, upstream: FakeUpstream
) -> None:
    """Two workers and a detector costing 0.3 s: about 7 requests a second. A burst of 40
    is far over that; the excess is refused admission and answered at once (the rule
    fails closed on the unscored detector), the rest are scored, none waits past the deadline."""
    deadline_ms = 1500
    proxy = start_proxy(
        rules=PACED_RULES,
        extra_scripts=(SUPPORT / "paced_detector.py",),
        llmwall_workers=2,
        llmwall_deadline_ms=deadline_ms,
    )
    for i in range(3):  # warm up: the orchestrator learns the detector's cost
        assert post(proxy.url + CHAT, chat(f"warm up {i}"))[0] == 200

    def one(i: int) -> int:
        return post(proxy.url + CHAT, chat(f"question number {i}"))[0]

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(one, range(40)))
    assert statuses.count(200) >= 3 and statuses.count(403) >= 10, statuses
    burst = events(proxy, 43)[3:]
    shed = [e for e in burst if "paced" in e["fields"]["cf.llm.prompt.failed_detections"]]
    scored = [e for e in burst if e not in shed]
    assert all(e["action"] == "block" and e["rule"] == "paced-unscored" for e in shed)
    # Refused admission means no waiting: the shed requests were decided well before the deadline.
    assert sorted(e["total_ms"] for e in shed)[len(shed) // 2] < deadline_ms / 3, [e["total_ms"] for e in shed]
    assert all("paced" in e["timings_ms"] for e in scored)
    assert max(e["total_ms"] for e in burst) < deadline_ms + 500


# ----------------------------------------------------------------------------- row 6


def _streamed(proxy: Proxy, body: bytes) -> int | None:
    """Send ``body``; None when the proxy dropped the connection (a killed flow)."""
    try:
        return send(proxy.port, "POST", CHAT, body, {})[0]
    except (ConnectionError, http.client.HTTPException):
        return None


def test_row6_request_streaming_does_not_switch_screening_off(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy(stream_large_bodies="1k")
    proxy.wait_for_log("stream_large_bodies=1k")  # the start-up warning
    assert post(proxy.url + CHAT, chat(UNSAFE))[0] == 403  # under the threshold: screened as usual
    # Over it, mitmproxy would send the body upstream as it arrives, before any screening:
    # refused before a byte of it leaves, benign or not (the warning says to raise the threshold).
    assert _streamed(proxy, chat(UNSAFE + " " + "x" * 2048)) in (None, 403)
    assert _streamed(proxy, chat("Suggest a name for a bakery. " + "y" * 2048)) in (None, 403)
    assert upstream.received == []
    assert [e["status"] for e in events(proxy, 3)[1:]] == ["streamed", "streamed"]
    # Failing open is a choice: the streamed body then passes unaltered, recorded as not screened.
    proxy = start_proxy(stream_large_bodies="1k", llmwall_on_unparsed="pass")
    benign = chat("Suggest a name for a bakery. " + "y" * 2048)
    assert _streamed(proxy, benign) == 200 and upstream.received[-1].body == benign
    assert events(proxy, 1)[0]["status"] == "streamed"


def _chunked_chat(proxy: Proxy, content: str, ctype: str = "application/json") -> bytes:
    return send_chunked(proxy.port, CHAT, chat(content), ctype=ctype)


def test_row6_a_chunked_body_that_crosses_the_threshold_never_reaches_the_upstream_whole(tmp_path: Path) -> None:
    """No Content-Length: mitmproxy buffers the chunks until they pass stream_large_bodies, then
    sends the headers and every chunk upstream as they arrive, and calls no hook until the body
    has ended. What this proves, byte for byte at a raw upstream: the body's data does reach the
    upstream's socket (nothing in mitmproxy's API can stop it), but its terminating chunk never
    does (the connection is half-closed instead), so the upstream never has a complete request
    to act on; the client gets an error, never the upstream's answer; the flow is recorded."""
    with raw_upstream() as upstream:
        proxy = launch_proxy(tmp_path, upstream, stream_large_bodies="1k")
        try:
            unsafe = UNSAFE + " " + "x" * 3000
            for content, ctype in ((unsafe, "application/json"), (unsafe, "text/plain"), ("Hi. " + "y" * 3000, "")):
                answer = _chunked_chat(proxy, content, ctype)
                assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
            time.sleep(0.5)
            assert upstream.complete == []  # not one request the upstream could answer
            # The limit, stated: the data before the end did reach it, without the last chunk.
            assert UNSAFE.encode() in upstream.raw and b"0\r\n\r\n" not in upstream.raw
            recorded = events(proxy, 3)
            assert [(e["status"], e["action"]) for e in recorded] == [("streamed", "block")] * 3
            # Control: a chunked body under the threshold is buffered and screened as usual.
            small = _chunked_chat(proxy, UNSAFE)
            assert small.startswith(b"HTTP/1.1 403"), small[:200]
            assert upstream.complete == []
        finally:
            stop_process(proxy.process)
        # Failing open is a choice: the streamed body then reaches the upstream whole, recorded.
        proxy = launch_proxy(tmp_path, upstream, stream_large_bodies="1k", llmwall_on_unparsed="pass")
        try:
            benign = "Suggest a name for a bakery. " + "y" * 3000
            assert _chunked_chat(proxy, benign).startswith(b"HTTP/1.1 200")
            assert upstream.complete == [chat(benign)]
            assert events(proxy, 1)[0]["status"] == "streamed"
        finally:
            stop_process(proxy.process)


def test_http2_requests_are_screened_like_http1(tmp_path: Path, upstream: FakeUpstream) -> None:
    """HTTP/2 from the client (TLS with ALPN h2; connection_strategy=lazy, so mitmproxy offers h2
    without asking the plain-HTTP upstream first): screened as HTTP/1 requests are, also when the
    body's length is not announced and it arrives in many DATA frames; a passed body is unchanged."""
    proxy = launch_proxy(tmp_path, upstream, connection_strategy="lazy")
    try:
        assert h2_post(proxy.port, CHAT, chat(UNSAFE)) == 403
        assert h2_post(proxy.port, CHAT, chat(UNSAFE), chunk=20, content_length=False) == 403
        assert upstream.received == []
        benign = chat("Suggest a name for a bakery.")
        assert h2_post(proxy.port, CHAT, benign, chunk=20, content_length=False) == 200
        assert upstream.received[-1].body == benign
        assert [e["action"] for e in events(proxy, 3)] == ["block", "block", None]
        # Smuggling: mitmproxy 12 sends an HTTP/2 body of unannounced length to an HTTP/1 upstream
        # with no Content-Length (nor chunked framing), so the upstream would read an empty body and
        # take the bytes after it as a request of their own, one llmwall never saw as a prompt.
        inner = chat(UNSAFE)
        smuggled = (
            f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(inner)}\r\n\r\n"
        ).encode() + inner
        h2_post(proxy.port, CHAT, smuggled, chunk=64, content_length=False)
        time.sleep(0.5)
        assert all(r.body != inner for r in upstream.received), "a smuggled request reached the upstream"
        assert upstream.received[-1].body == smuggled  # what the upstream read is what llmwall saw
    finally:
        stop_process(proxy.process)


# ----------------------------------------------------------------------------- row 10

PII_BLOCK = """\
rules:
  - id: block-email
    expression: any(cf.llm.prompt.pii_categories[*] == "EMAIL_ADDRESS")
    action: block
  - id: log-unsafe
    expression: cf.llm.prompt.unsafe_topic_detected
    action: log
"""


def test_row10_a_half_written_rules_file_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(PII_BLOCK)
    watcher = RulesWatcher(path)
    first_rule_only = PII_BLOCK.split("  - id: log-unsafe")[0].replace("block-email", "half-email")
    path.write_text(first_rule_only)  # the writer is still going
    assert watcher.poll() is None
    assert [r.id for r in watcher.current.rules] == ["block-email", "log-unsafe"]
    path.write_text(PII_BLOCK.replace("log-unsafe", "log-unsafe-2"))  # finished before the next poll
    assert watcher.poll() is None and watcher.poll() is None
    assert [r.id for r in watcher.current.rules] == ["block-email", "log-unsafe-2"]


def test_row10_emptied_rules_file_keeps_the_rules_and_an_empty_set_warns(start_proxy, upstream) -> None:
    proxy = start_proxy(rules=PII_BLOCK)
    proxy.wait_for_log("rules loaded from")
    email = chat("Please write to jane.doe@example.org about the invoice")
    proxy.rules_path.write_text("")
    proxy.wait_for_log("the rules file is empty")
    assert post(proxy.url + CHAT, email)[0] == 403  # still the last good rules
    proxy.rules_path.write_text("rules: []\n")
    proxy.wait_for_log("no enabled rules")
    assert post(proxy.url + CHAT, email)[0] == 200  # an explicit empty set applies, with the warning


# ----------------------------------------------------------------------------- row 11


def test_row11_odd_model_names_and_paths_are_recorded_bounded(start_proxy, upstream: FakeUpstream) -> None:
    proxy = start_proxy()
    secret_words = "tell me about the zebra project plans"
    cases = [
        (CHAT, chat(UNSAFE, model="m" * 300)),
        (CHAT, chat(UNSAFE, model="gpt-4o\nX-Injected: 1")),
        (CHAT, chat(UNSAFE, model=secret_words)),
        ("/v1/" + secret_words.replace(" ", "%20") + "/chat/completions", chat(UNSAFE)),
        ("/v1/how-to-ask-about-the-zebra-project/chat/completions", chat(UNSAFE)),
    ]
    for path, body in cases:
        assert post(proxy.url + path, body)[0] == 403
    recorded = events(proxy, len(cases))
    assert len(recorded) == len(cases)  # no event lost to an odd value
    assert [e["model"] for e in recorded[:3]] == ["{invalid}"] * 3
    assert all("{text}" in e["path_template"] for e in recorded[3:])
    assert "analytics write failed" not in proxy.log()
    dump = "\n".join(sqlite3.connect(proxy.db_path).iterdump())
    assert "zebra" not in dump and "X-Injected" not in dump and "m" * 300 not in dump


# ----------------------------------------------------------------------------- rows 7 and 9

REDACT_PII = """\
rules:
  - id: redact-contacts
    expression: cf.llm.prompt.pii_detected
    action: redact
  - id: log-unsafe
    expression: cf.llm.prompt.unsafe_topic_detected
    action: log
"""


def test_row9_redact_reaches_every_turn_also_when_the_history_is_resent(start_proxy, upstream) -> None:
    proxy = start_proxy(rules=REDACT_PII)
    history = [
        {"role": "system", "content": "Support desk. Escalations go to ops.lead@example.org."},
        {"role": "user", "content": "My address is jane.doe@example.com, please note it."},
        {"role": "assistant", "content": "Noted."},
    ]
    for turn in ("What is the weather like?", "And tomorrow?"):  # the SDK resends the history
        history.append({"role": "user", "content": turn})
        assert post(proxy.url + CHAT, {"model": "m", "messages": history})[0] == 200
        forwarded = upstream.received[-1].body.decode()
        assert "example.com" not in forwarded and "example.org" not in forwarded
        assert "<EMAIL_ADDRESS>" in forwarded and turn in forwarded
        history.append({"role": "assistant", "content": "Sunny."})
    first, second = events(proxy, 2)
    assert first["redacted"] == ["EMAIL_ADDRESS"] == second["redacted"]
    assert first["fields"]["cf.llm.prompt.flagged_roles"] == ["system", "user"]


def test_row9_latest_turn_mode_is_still_an_option(start_proxy, upstream: FakeUpstream) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": UNSAFE},
            {"role": "user", "content": UNSAFE},
            {"role": "assistant", "content": "Sorry, I can only help with ordinary questions."},
            {"role": "user", "content": "Suggest a name for a bakery."},
        ],
    }
    assert post(start_proxy(llmwall_turns="latest").url + CHAT, body)[0] == 200
    assert post(start_proxy(llmwall_turns="conversation").url + CHAT, body)[0] == 403
    body["messages"][1]["content"] = "Hello there."
    assert post(start_proxy(llmwall_turns="conversation").url + CHAT, body)[0] == 200  # system not screened
    assert post(start_proxy().url + CHAT, body)[0] == 403  # default: every turn


def test_row7_an_unrecognised_body_with_prompt_text_is_recorded(start_proxy, upstream: FakeUpstream) -> None:
    odd = {"model": "m", "prompt": {"text": UNSAFE}}  # no format reads a prompt object
    proxy = start_proxy()
    assert post(proxy.url + "/v1/generate", odd)[0] == 200  # auto: recorded, passed (ordinary APIs look alike)
    assert events(proxy, 1)[0]["status"] == "unrecognised"
    proxy = start_proxy(llmwall_on_unparsed="block")
    assert post(proxy.url + "/v1/generate", odd)[0] == 403
    assert post(proxy.url + "/api/orders", {"order": 1, "note": "leave at the door"})[0] == 200  # not LLM-like


def test_row7_a_provider_json_inside_a_form_body_is_recorded(start_proxy, upstream: FakeUpstream) -> None:
    """No LLM API reads its prompt from a form field, but a custom gateway could: a form body
    whose fields carry a provider's JSON (percent-encoded or in a multipart part) is recorded
    as unrecognised, passed by ``auto`` and refused by ``block``; an ordinary form is left alone."""
    payload = chat(UNSAFE).decode()
    encoded = ("payload=" + quote_plus(payload) + "&submit=1").encode()
    multipart = (
        '--XyZ\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n'
        + payload
        + "\r\n--XyZ--\r\n"
    ).encode()
    forms = [
        (encoded, "application/x-www-form-urlencoded"),
        (multipart, "multipart/form-data; boundary=XyZ"),
        (encoded, "Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
    ]
    proxy = start_proxy()
    for raw, ctype in forms:
        assert post(proxy.url + CHAT, raw, {"content-type": ctype})[0] == 200
        assert upstream.received[-1].body == raw
    assert [e["status"] for e in events(proxy, 3)] == [UNRECOGNISED] * 3
    proxy = start_proxy(llmwall_on_unparsed="block")
    for raw, ctype in forms:
        assert post(proxy.url + CHAT, raw, {"content-type": ctype})[0] == 403
    ordinary = b"name=Jane&comment=Lovely+bakery%21"
    assert post(proxy.url + "/contact", ordinary, {"content-type": "application/x-www-form-urlencoded"})[0] == 200
    assert upstream.received[-1].body == ordinary
    time.sleep(0.5)
    assert len(events(proxy, 3)) == 3  # the ordinary form was not recorded
