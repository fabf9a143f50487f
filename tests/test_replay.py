"""``llmwall replay`` on a flow file recorded by a real ``mitmdump -w`` in front of a fake upstream."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import FakeUpstream, free_port, post, start_process
from mitmproxy import http, io
from mitmproxy.tools.web.app import flow_to_json

RULES = """\
rules:
  - id: block-email
    expression: any(cf.llm.prompt.pii_categories[*] in {"EMAIL_ADDRESS"})
    action: block
  - id: log-long
    expression: cf.llm.prompt.token_count gt 3
    action: log
"""
EMAIL_PROMPT = "forward the contract to odile.brenner@example.org"
PLAIN_PROMPT = "name three rivers in France"
BIN = Path(sys.executable).parent


def _record(tmp_path: Path, upstream: FakeUpstream) -> Path:
    """Plain mitmdump (no llmwall) records two LLM requests and one ordinary API call."""
    flows = tmp_path / "recorded.mitm"
    port = free_port()
    cmd = [str(BIN / "mitmdump"), "--mode", f"reverse:{upstream.url}", "--listen-host", "127.0.0.1"]
    cmd += ["-p", str(port), "-w", str(flows)]
    proc = start_process(cmd, port, tmp_path / "record.log")
    try:
        url = f"http://127.0.0.1:{port}"
        for text in (EMAIL_PROMPT, PLAIN_PROMPT):
            status, _, _ = post(
                url + "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": text}]}
            )
            assert status == 200  # recorded without llmwall: both reached the upstream
        post(url + "/api/orders", {"order": 7})
    finally:
        time.sleep(0.5)
        proc.terminate()
        proc.wait(timeout=15)
    assert len(list(io.FlowReader(flows.open("rb")).stream())) == 3
    return flows


def test_replay_screens_recorded_flows_and_writes_annotations(tmp_path: Path, upstream: FakeUpstream) -> None:
    flows = _record(tmp_path, upstream)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    out = tmp_path / "annotated.mitm"
    before = len(upstream.received)
    res = subprocess.run(
        [str(BIN / "llmwall"), "replay", str(flows), "--rules", str(rules), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert len(upstream.received) == before  # offline: nothing was sent again
    lines = res.stdout.splitlines()
    assert len(lines) == 2, res.stdout
    assert lines[0].startswith("llmwall: block POST 127.0.0.1/v1/chat/completions rule=block-email")
    assert "categories=[EMAIL_ADDRESS]" in lines[0]
    assert lines[1].startswith("llmwall: log POST 127.0.0.1/v1/chat/completions rule=log-long")
    assert "3 flows, 2 LLM requests screened (block 1, log 1)" in res.stderr
    assert "odile" not in res.stdout + res.stderr and "rivers" not in res.stdout + res.stderr

    annotated = [f for f in io.FlowReader(out.open("rb")).stream() if isinstance(f, http.HTTPFlow)]
    assert len(annotated) == 3
    blocked, logged, other = annotated
    assert blocked.marked == ":no_entry:" and blocked.comment == lines[0]
    assert blocked.metadata["llmwall"]["rule"] == "block-email"
    assert blocked.response is not None and blocked.response.status_code == 200  # the recorded response is kept
    assert logged.marked == ":warning:" and logged.metadata["llmwall"]["action"] == "log"
    assert "llmwall" not in other.metadata and other.comment == ""
    # What mitmweb's flow list and Comment tab receive for these flows (its own serializer).
    shown = flow_to_json(blocked)
    assert shown["marked"] == "\u26d4" and shown["comment"].startswith("llmwall: block POST")
    assert flow_to_json(logged)["marked"] == "\u26a0"


def test_replay_json_and_a_broken_rules_file(tmp_path: Path, upstream: FakeUpstream) -> None:
    flows = _record(tmp_path, upstream)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    res = subprocess.run(
        [str(BIN / "llmwall"), "replay", str(flows), "--rules", str(rules), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["action"] for r in records] == ["block", "log"]
    assert records[0]["fields"]["cf.llm.prompt.pii_categories"] == ["EMAIL_ADDRESS"]

    rules.write_text(
        'rules:\n  - id: a\n    expression: any(cf.llm.prompt.pii_categories[*] eq "EMAIL")\n    action: block\n'
    )
    res = subprocess.run(
        [str(BIN / "llmwall"), "replay", str(flows), "--rules", str(rules)], capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 2 and "did you mean 'EMAIL_ADDRESS'" in res.stderr and "Traceback" not in res.stderr
