"""Security regression suite, fuzzing: 5,000 malformed bodies through one real mitmdump.

Mutations of real provider bodies (truncation, flipped bytes, stray brackets, deep
nesting, lone surrogates, duplicate keys, UTF-16/32, lying or stacked encodings, small
bombs, oversize bodies) are sent with random methods, paths and content types. The
proxy must stay up without an internal error, answer every request (pass or block),
forward every passed body byte for byte, and keep its peak memory under 600 MB.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import http.client
import json
import random
import zlib
from pathlib import Path

import brotli
from conftest import FakeUpstream, launch_proxy, stop_process
from provider_samples import SAMPLES
from security_support import UNSAFE
from test_security_proxy import peak_rss_mb

BODIES = 5000
SEED = 12
MAX_BODY_KB = 256
PATHS = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/api/chat", "/v1/completions", "/x"]
CTYPES = ["application/json", "text/plain", "", "application/x-www-form-urlencoded", "application/json; charset=utf-16"]


def _mutate(rng: random.Random, base: bytes) -> tuple[bytes, dict[str, str]]:
    """One malformed variant of ``base`` and the headers it needs."""
    kind = rng.randrange(14)
    data, headers = base, {}
    if kind == 0:
        data = base[: rng.randrange(len(base))]
    elif kind == 1:
        buf = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data = bytes(buf)
    elif kind == 2:
        at = rng.randrange(len(base))
        junk = rng.choice([b"[", b"{", b'"', b"]", b"}", b"\\", b",,", b":"]) * rng.randint(1, 50)
        data = base[:at] + junk + base[at:]
    elif kind == 3:
        depth = rng.choice([63, 64, 65, 200, 3000, 50_000])
        data = base.replace(b"{", b'{"pad": ' + b"[" * depth + b"]" * depth + b", ", 1)
    elif kind == 4:
        data = base.replace(b'"content": "', rng.choice([b'"content": "\\ud800', b'"content": "\\udfff\\ud800']), 1)
    elif kind == 5:
        data = base.replace(b"{", b'{"messages": "x", ', 1)  # duplicate key
    elif kind == 6:
        data = base.decode().encode(rng.choice(["utf-16", "utf-16-le", "utf-32-be", "utf-32"]))
    elif kind == 7:
        coding = rng.choice(["gzip", "br", "deflate", "zstd", "gzip, gzip", "x-unknown", "gzip, br"])
        payload = rng.choice([gzip.compress(base), brotli.compress(base), zlib.compress(base), base, b"\x1f\x8b junk"])
        data, headers = payload, {"content-encoding": coding}
    elif kind == 8:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = comp.compress(b" " * (MAX_BODY_KB * 1024 * 3)) + comp.compress(base) + comp.flush()
        headers = {"content-encoding": "gzip"}
    elif kind == 9:
        data = base.replace(b"{", b'{"pad": "' + b"p" * (MAX_BODY_KB * 1024 + 10) + b'", ', 1)
    elif kind == 10:
        data = base.replace(b"{", b'{"n": 1e999999, "m": NaN, "i": -Infinity, ', 1)
    elif kind == 11:
        data = rng.choice([b"", b"   ", b"null", b"[]", b"{}", b'"messages"', b"\x00\x00\x00\x00"])
    elif kind == 12:
        data = json.dumps(_random_json(rng, 4)).encode()
    else:
        data = base.replace(b'"messages"', rng.choice([b'"Messages"', b'"MESSAGES"', b'"\\u006dessages"']), 1)
    return data, headers


def _random_json(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice([None, True, 1, -2.5, "x", UNSAFE, "jane.doe@example.org", "\u202e\u0000"])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    keys = ["messages", "prompt", "role", "content", "contents", "parts", "text", "input", "system", "model", "q"]
    return {rng.choice(keys): _random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def test_fuzz_5000_malformed_bodies(tmp_path: Path) -> None:
    from conftest import serve_upstream

    rng = random.Random(SEED)
    bases = [json.dumps(s.body).encode() for s in SAMPLES.values()]
    cases = []
    for i in range(BODIES):
        data, headers = _mutate(rng, rng.choice(bases))
        headers = {**headers, "x-fuzz-id": str(i)}
        ctype = rng.choice(CTYPES)
        if ctype:
            headers["content-type"] = ctype
        cases.append((i, rng.choice(["POST", "POST", "PUT", "PATCH"]), rng.choice(PATHS), data, headers))
    with serve_upstream() as upstream:
        proxy = launch_proxy(tmp_path, upstream, llmwall_max_body_kb=MAX_BODY_KB)
        try:
            statuses = _send_all(proxy.port, cases)
            assert proxy.process.poll() is None
            rss = peak_rss_mb(proxy)
            print(f"mitmdump peak RSS after {BODIES} bodies: {rss:.0f} MB")  # shown with pytest -s
            assert rss < 600
            log = proxy.log()
        finally:
            stop_process(proxy.process)
    assert len(statuses) == BODIES
    assert set(statuses.values()) <= {200, 403}, {s for s in statuses.values() if s not in (200, 403)}
    assert "internal error" not in log
    _assert_passed_unaltered(upstream, cases, statuses)


def _send_all(port: int, cases: list) -> dict[int, int]:
    def worker(chunk: list) -> dict[int, int]:
        out: dict[int, int] = {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i, method, path, data, headers in chunk:
            for attempt in range(2):
                try:
                    conn.request(method, path, body=data, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    out[i] = resp.status
                    break
                except (ConnectionError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    if attempt:
                        raise
        conn.close()
        return out

    chunks = [cases[k::4] for k in range(4)]
    results: dict[int, int] = {}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for part in pool.map(worker, chunks):
            results.update(part)
    return results


def _assert_passed_unaltered(upstream: FakeUpstream, cases: list, statuses: dict[int, int]) -> None:
    received = {r.headers.get("x-fuzz-id"): r.body for r in upstream.received}
    for i, _method, _path, data, _headers in cases:
        if statuses[i] == 200:
            assert received.get(str(i)) == data, f"case {i} was altered on its way upstream"
        else:
            assert str(i) not in received, f"case {i} was blocked yet reached the upstream"
