"""Security regression suite, evasion cases: every line of fixtures/evasion_cases.jsonl is sent
through one real mitmdump (reverse mode, block rules on unsafe topics and PII, defaults
otherwise) and must be blocked before the upstream, or passed byte for byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeUpstream, Proxy, launch_proxy, serve_upstream, stop_process
from security_support import MAX_BODY_KB, case_bytes, load_cases, send

CASES = load_cases()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, FakeUpstream]]:
    tmp: Path = tmp_path_factory.mktemp("evasion")
    with serve_upstream() as upstream:
        proxy = launch_proxy(tmp, upstream, llmwall_max_body_kb=MAX_BODY_KB)
        try:
            yield proxy, upstream
        finally:
            stop_process(proxy.process)


def test_the_case_file_covers_every_row_and_both_outcomes() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert {c["expect"] for c in CASES} == {"block", "pass"}
    assert {c["row"] for c in CASES} >= {0, 1, 2, 7, 8, 9}
    assert all(c["expect"] == "block" for c in CASES if "known_limit" in c)  # a limit is a miss, never a pass


def _param(case: dict) -> object:
    """A case; one with ``known_limit`` (a reproduction llmwall does not stop, and why) is a strict
    xfail: it stays in the table, and the day it is blocked the suite says so."""
    limit = case.get("known_limit")
    marks = [pytest.mark.xfail(reason=limit, strict=True)] if limit else []
    return pytest.param(case, id=case["id"], marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_evasion_case(case: dict, suite: tuple[Proxy, FakeUpstream]) -> None:
    proxy, upstream = suite
    raw = case_bytes(case)
    path = case.get("path", "/v1/chat/completions")
    before = len(upstream.received)
    status, payload = send(proxy.port, case.get("method", "POST"), path, raw, case.get("headers", {}))
    if case["expect"] == "block":
        assert status == 403, (status, payload[:300], proxy.log()[-1500:])
        time.sleep(0.05)
        assert len(upstream.received) == before, "a blocked request reached the upstream"
    else:
        assert status == 200, (status, payload[:300])
        assert upstream.received[-1].body == raw, "a passed request was altered"
    assert proxy.process.poll() is None
