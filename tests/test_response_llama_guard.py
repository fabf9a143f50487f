"""Answers judged by Llama Guard as the Agent's turn, through the real addons in process.

``LLMWall`` screens the request, ``ResponseScreen`` the answer (whole and streamed), with the
tiny fixture model (tests/fixtures/tiny-llama-guard) and with the remote backend against a
loopback fake completions server. What is checked is what reaches the model: the Agent-side
prompt with the request's latest user turn before the answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import hooks, options
from mitmproxy.test import taddons, tflow, tutils
from test_llama_guard_remote import FakeServer

from llmwall.analytics.addon import Analytics
from llmwall.detectors import llama_guard_prompt as lgp
from llmwall.proxy.addon import LLMWall
from llmwall.responses.addon import ResponseScreen

sys.path.insert(0, str(Path(__file__).parent / "support"))
from streams import openai_chat_events, openai_chat_json  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny-llama-guard"
RULES = """\
rules:
  - id: block-unsafe-answer
    expression: cf.llm.response.unsafe_topic_detected
    action: block
"""
BOMB = "How do I build a bomb at home?"
BREAD = "How do I bake sourdough bread?"
ANSWER = "I cannot help with that."


def chat_flow(question: str) -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.request.host = "api.openai.com"
    flow.request.method = "POST"
    flow.request.path = "/v1/chat/completions"
    flow.request.headers["content-type"] = "application/json"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": question},
    ]
    flow.request.content = json.dumps({"model": "gpt-test", "messages": messages}).encode()
    flow.response = None
    return flow


def answered(flow: tflow.HTTPFlow, body: bytes, ctype: str = "application/json") -> tflow.HTTPFlow:
    flow.response = tutils.tresp(content=body)
    flow.response.headers["content-type"] = ctype
    return flow


class Addons:
    """LLMWall, ResponseScreen and Analytics loaded and configured as mitmdump would."""

    def __init__(self, tmp_path: Path, **values: object) -> None:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES)
        opts = options.Options()
        values = {"llmwall_rules": rules, "llmwall_db": "", "llmwall_device": "cpu", **values}
        values.setdefault("llmwall_models", tmp_path / "no-models")
        opts.set(*(f"{k}={v}" for k, v in values.items()), defer=True)
        self.wall, self.analytics = LLMWall(), Analytics()
        self.screen = ResponseScreen(self.wall, self.analytics)
        self._ctx = taddons.context(options=opts)
        tctx = self._ctx.__enter__()
        tctx.master.addons.add(self.wall, self.screen, self.analytics)
        for addon in (self.wall, self.screen, self.analytics):
            tctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(tctx.options.keys())))

    def close(self) -> None:
        self.screen.done()
        self.wall.done()
        self._ctx.__exit__(None, None, None)

    def detector(self):
        return next(d for d in self.wall.detectors if d.name == "llama_guard")

    async def whole(self, question: str, answer: str) -> tflow.HTTPFlow:
        flow = chat_flow(question)
        await self.wall.request(flow)
        assert flow.response is None and flow.metadata["llmwall"]["status"] == "screened"
        answered(flow, openai_chat_json(answer))
        await self.screen.response(flow)
        return flow

    async def streamed(self, question: str, answer: str) -> tuple[tflow.HTTPFlow, bytes]:
        flow = chat_flow(question)
        await self.wall.request(flow)
        answered(flow, b"", "text/event-stream")
        self.screen.responseheaders(flow)
        stream = flow.response.stream
        assert callable(stream)
        # In a worker thread, as the final window is waited for (never on a running event loop).
        sent = await asyncio.to_thread(lambda: b"".join(stream(openai_chat_events([answer])) + stream(b"")))
        await self.screen.response(flow)
        return flow, sent


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Iterator[Addons]:
    tmp_path = tmp_path_factory.mktemp("local")
    models = tmp_path / "models"
    models.mkdir()
    (models / "llama-guard-3-1b").symlink_to(FIXTURE)
    addons = Addons(tmp_path, llmwall_models=models, llmwall_response_deadline_ms=5000)
    yield addons
    addons.close()


def record_jobs(detector) -> list:
    """The jobs the detector queues for its model (the real engine still scores them)."""
    engine, jobs = detector.engine, []
    submit = engine.submit

    def recording(*args, **kwargs):
        job, truncated = submit(*args, **kwargs)
        jobs.append(job)
        return job, truncated

    engine.submit = recording
    return jobs


def expected_tail(detector, answer: str, question: str) -> list[int]:
    engine = detector.engine
    return engine.encode(engine.template.agent().tail(answer, question)) + [engine.blank_id]


def test_a_whole_answer_is_judged_after_the_latest_user_turn(local: Addons) -> None:
    detector = local.detector()
    assert "tiny-llama-guard" in detector.describe()
    jobs = record_jobs(detector)

    async def test() -> None:
        blocked = await local.whole(BOMB, ANSWER)
        passed = await local.whole(BREAD, ANSWER)
        # The same answer: unsafe after the weapons question, safe after the bread one (toy policy).
        assert blocked.response.status_code == 403
        message = json.loads(blocked.response.content)["error"]["message"]
        assert message.startswith("Response blocked by llmwall (rule block-unsafe-answer)")
        assert passed.response.status_code == 200 and json.loads(passed.response.content)["choices"]
        assert "response block" in (blocked.comment or "") and not passed.comment

    asyncio.run(test())
    agent_header = detector.engine.template.agent().header()
    assert [j.key for j in jobs] == [("policy", lgp.AGENT)] * 2
    assert all(j.header == agent_header for j in jobs)
    assert [j.tail_ids for j in jobs] == [expected_tail(detector, ANSWER, q) for q in (BOMB, BREAD)]


def test_a_streamed_answer_is_judged_after_the_latest_user_turn(local: Addons) -> None:
    detector = local.detector()
    jobs = record_jobs(detector)

    async def test() -> tuple[bytes, bytes]:
        _, cut = await local.streamed(BOMB, ANSWER)
        _, clean = await local.streamed(BREAD, ANSWER)
        return cut, clean

    cut, clean = asyncio.run(test())
    assert b'"finish_reason": "content_filter"' in cut and ANSWER.encode() not in cut
    assert ANSWER.encode() in clean and b"content_filter" not in clean
    assert {j.key for j in jobs} == {("policy", lgp.AGENT)}
    tails = [j.tail_ids for j in jobs]
    assert expected_tail(detector, ANSWER, BOMB) in tails and expected_tail(detector, ANSWER, BREAD) in tails


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


def test_the_remote_backend_sends_the_answer_in_the_conversation(tmp_path: Path, server: FakeServer) -> None:
    addons = Addons(tmp_path, llmwall_remote_llama_guard=server.url)
    try:
        assert addons.detector().describe().startswith("llama_guard: remote")

        async def test() -> tflow.HTTPFlow:
            return await addons.whole(BREAD, "Sourdough needs flour, water, salt and a starter.")

        flow = asyncio.run(test())
    finally:
        addons.close()
    assert flow.response.status_code == 200
    prompts = [body["prompt"] for path, body, _ in server.requests]
    expected = (
        lgp.template_for(lgp.TEMPLATE_8B).agent().full("Sourdough needs flour, water, salt and a starter.", BREAD)
    )
    assert prompts == [expected[len(lgp.BOS) :] + "\n\n"]
    assert f"User: {BREAD}\n\nAgent: Sourdough needs flour" in prompts[0]
