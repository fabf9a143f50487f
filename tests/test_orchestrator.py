"""The orchestrator with real threads: parallelism, deadline, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time

from llmwall.detectors.base import Detection, Detector, NotScored, Prompt, ScreenRequest, Span, TextPart
from llmwall.proxy import orchestrator
from llmwall.proxy.orchestrator import Orchestrator


def request(deadline_s: float, text: str = "hello") -> ScreenRequest:
    prompt = Prompt("openai.chat", (TextPart(("messages", 0, "content"), text),))
    return ScreenRequest(prompt, time.monotonic() + deadline_s)


class Sleeper(Detector):
    provides = frozenset({"cf.llm.prompt.token_count"})

    def __init__(self, name: str, seconds: float, barrier: threading.Barrier | None = None) -> None:
        self.name, self.seconds, self.barrier = name, seconds, barrier
        self.release = threading.Event()  # set by a test to end a long sleep early

    def detect(self, req: ScreenRequest) -> Detection:
        if self.barrier:
            self.barrier.wait(timeout=5)  # fails unless the detectors really run at the same time
        self.release.wait(self.seconds)
        return Detection(fields={f"x.{self.name}": True})


class Raiser(Detector):
    name = "raiser"
    provides = frozenset({"cf.llm.prompt.pii_detected"})

    def detect(self, req: ScreenRequest) -> Detection:
        raise ValueError("secret prompt text")


class Injection(Detector):
    name = "inj"
    provides = frozenset({"cf.llm.prompt.injection_score"})

    def detect(self, req: ScreenRequest) -> Detection:
        time.sleep(5)
        return Detection(fields={"cf.llm.prompt.injection_score": 3})


def test_detectors_run_in_parallel() -> None:
    barrier = threading.Barrier(3)
    dets = [Sleeper(f"d{i}", 0.2, barrier) for i in range(3)]
    orch = Orchestrator(workers=4)
    result = asyncio.run(orch.screen(request(20), dets))
    # The barrier only opens when all three run at once; run one by one, each would time out.
    assert sorted(result.timings_ms) == ["d0", "d1", "d2"]
    assert result.not_scored == [] and result.errors == []
    orch.close()


def test_deadline_returns_what_finished() -> None:
    orch = Orchestrator(workers=4)
    start = time.monotonic()
    slow = Sleeper("slow", 30)
    result = asyncio.run(orch.screen(request(0.3), [Sleeper("fast", 0.01), slow]))
    elapsed = time.monotonic() - start
    slow.release.set()
    assert elapsed < 15  # loose: only shows it did not wait for the 30 s detector
    assert result.fields == {
        "x.fast": True,
        "cf.llm.prompt.failed_detections": ["slow"],
        "cf.llm.prompt.flagged_roles": [],
    }
    assert result.not_scored == ["slow"]
    orch.close()


def test_missed_injection_is_scored_100() -> None:
    orch = Orchestrator(workers=2)
    result = asyncio.run(orch.screen(request(0.1), [Injection()]))
    assert result.fields["cf.llm.prompt.injection_score"] == 100
    assert result.not_scored == ["inj"]
    orch.close()


def test_raising_detector_is_an_error_not_a_crash(caplog) -> None:
    orch = Orchestrator(workers=2)
    result = asyncio.run(orch.screen(request(2), [Raiser(), Sleeper("ok", 0)]))
    assert result.errors == ["raiser"]
    assert result.fields.pop("cf.llm.prompt.failed_detections") == sorted(result.errors + result.not_scored)
    assert result.fields.pop("cf.llm.prompt.flagged_roles") == []
    assert result.fields == {"x.ok": True}
    assert "secret prompt text" not in caplog.text  # exception messages may quote the prompt
    assert "raiser" in caplog.text
    orch.close()


def test_work_queued_past_its_deadline_is_skipped() -> None:
    """One worker, a slow job: the second request's job must not run after its deadline."""
    orch = Orchestrator(workers=1)
    ran: list[str] = []

    class Recorder(Detector):
        name = "rec"
        provides = frozenset({"cf.llm.prompt.token_count"})

        def detect(self, req: ScreenRequest) -> Detection:
            ran.append(req.prompt.text)
            time.sleep(0.4)
            return Detection(fields={})

    async def both() -> None:
        await asyncio.gather(
            orch.screen(request(0.2, "first"), [Recorder()]), orch.screen(request(0.2, "second"), [Recorder()])
        )

    asyncio.run(both())
    time.sleep(0.6)
    assert ran == ["first"]
    orch.close()


class GivesUp(Detector):
    """Answers at once that it cannot score in time (the detector protocol's NotScored)."""

    name = "gives_up"
    provides = frozenset({"cf.llm.prompt.secret_detected"})

    def detect(self, req: ScreenRequest) -> Detection:
        raise NotScored("deadline")


def test_not_scored_has_one_meaning_and_is_counted() -> None:
    orch = Orchestrator(workers=4)
    result = asyncio.run(orch.screen(request(20), [GivesUp(), Raiser()]))
    assert result.not_scored == ["gives_up"] and result.errors == ["raiser"]
    assert result.fields == {
        "cf.llm.prompt.failed_detections": ["gives_up", "raiser"],
        "cf.llm.prompt.flagged_roles": [],
    }
    assert result.timings_ms == {} and result.info == {}


class Keyword(Detector):
    """Flags PII on turns containing 'secret' (with a span) and counts every call it gets."""

    name = "keyword"
    provides = frozenset({"cf.llm.prompt.pii_detected", "cf.llm.prompt.injection_score"})

    def __init__(self) -> None:
        self.calls: list[str] = []

    def detect(self, req: ScreenRequest) -> Detection:
        text = req.prompt.text
        self.calls.append(text)
        at = text.find("secret")
        spans = [Span(at, at + 6, "EMAIL_ADDRESS")] if at >= 0 else []
        return Detection(
            fields={"cf.llm.prompt.pii_detected": at >= 0, "cf.llm.prompt.injection_score": 10 if at >= 0 else 90},
            spans=spans,
        )


def conversation(*turns: tuple[str, str]) -> ScreenRequest:
    parts = tuple(TextPart(("messages", i, "content"), text, role) for i, (role, text) in enumerate(turns))
    return ScreenRequest(Prompt("openai.chat", parts), time.monotonic() + 5)


def test_every_turn_is_screened_once_and_a_resent_history_costs_only_the_new_turn() -> None:
    orch, det = Orchestrator(workers=2), Keyword()
    first = conversation(("system", "be kind, secret"), ("user", "hello"))
    result = asyncio.run(orch.screen(first, [det]))
    assert sorted(det.calls) == ["be kind, secret", "hello"]  # each turn on its own
    assert result.fields["cf.llm.prompt.pii_detected"] is True  # found in the system turn
    assert result.fields["cf.llm.prompt.injection_score"] == 10  # the lowest turn score
    assert result.fields["cf.llm.prompt.flagged_roles"] == ["system"]
    # The span lands on the system turn's text inside the whole prompt.
    (span,) = result.spans
    assert first.prompt.text[span.start : span.end] == "secret"
    det.calls.clear()
    second = conversation(("system", "be kind, secret"), ("user", "hello"), ("assistant", "hi"), ("user", "more"))
    result = asyncio.run(orch.screen(second, [det]))
    assert sorted(det.calls) == ["hi", "more"]  # the resent turns came from the cache
    assert result.cached_turns == 2 and result.fields["cf.llm.prompt.pii_detected"] is True
    (span,) = result.spans
    assert second.prompt.text[span.start : span.end] == "secret"
    orch.close()


class ReplyAware(Detector):
    """Records the user turn each call was judged after (Llama Guard judges answers in context)."""

    name = "reply_aware"
    provides = frozenset({"cf.llm.prompt.unsafe_topic_detected"})
    reads_reply_to = True

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def detect(self, req: ScreenRequest) -> Detection:
        self.seen.append(req.reply_to)
        return Detection(fields={"cf.llm.prompt.unsafe_topic_detected": req.reply_to == "bad question"})


def test_an_answer_reaches_the_detector_with_its_user_turn_and_is_cached_per_user_turn() -> None:
    orch, det = Orchestrator(workers=2), ReplyAware()
    answer = conversation(("assistant", "I cannot help with that."))
    verdicts = []
    for reply_to in (None, "bad question", "good question", "bad question"):
        req = dataclasses.replace(answer, reply_to=reply_to, deadline=time.monotonic() + 5)
        verdicts.append(asyncio.run(orch.screen(req, [det])).fields["cf.llm.prompt.unsafe_topic_detected"])
    # The same text after another user turn is judged again; the same pair comes from the cache.
    assert det.seen == [None, "bad question", "good question"]
    assert verdicts == [False, True, False, True]
    orch.close()


def test_a_request_over_capacity_is_refused_at_once_with_its_detectors_failed() -> None:
    orch = Orchestrator(workers=1)
    slow = Sleeper("slow", 0.4)
    asyncio.run(orch.screen(request(5), [slow]))  # learns the cost: 0.4 s
    slow.release.clear()

    async def burst() -> list:
        return await asyncio.gather(*(orch.screen(request(1.0, f"q{i}"), [slow]) for i in range(6)))

    start = time.monotonic()
    results = asyncio.run(burst())
    refused = [r for r in results if r.shed == ["slow"]]
    assert 2 <= len(refused) <= 5  # about deadline / cost fit; the rest are refused
    assert all(r.fields["cf.llm.prompt.failed_detections"] == ["slow"] for r in refused)
    assert time.monotonic() - start < 3  # nothing waited for work that could not finish
    orch.close()


def test_when_the_process_is_overloaded_only_cached_turns_are_scored() -> None:
    orch, det = Orchestrator(workers=2), Keyword()
    asyncio.run(orch.screen(conversation(("user", "a secret")), [det]))
    det.calls.clear()
    result = asyncio.run(orch.screen(conversation(("user", "a secret"), ("user", "new")), [det], overloaded=True))
    assert det.calls == [] and result.shed == ["keyword"]
    assert result.fields["cf.llm.prompt.failed_detections"] == ["keyword"]
    cached = asyncio.run(orch.screen(conversation(("user", "a secret")), [det], overloaded=True))
    assert cached.shed == [] and cached.fields["cf.llm.prompt.pii_detected"] is True  # all from the cache
    orch.close()


class LaneSleeper(Sleeper):
    """A Sleeper that shares a lane and records which thread ran it, and when."""

    lane = "shared"

    def __init__(self, name: str, seconds: float, log: list[tuple[str, int, float, float]]) -> None:
        super().__init__(name, seconds)
        self.log = log

    def detect(self, req: ScreenRequest) -> Detection:
        start = time.monotonic()
        detection = super().detect(req)
        self.log.append((self.name, threading.get_ident(), start, time.monotonic()))
        return detection


class LaneRaiser(Raiser):
    lane = "shared"


def test_detectors_of_one_lane_run_one_after_the_other_in_one_job() -> None:
    log: list[tuple[str, int, float, float]] = []
    dets = [LaneSleeper("a", 0.05, log), LaneSleeper("b", 0.05, log), LaneSleeper("c", 0.05, log)]
    orch = Orchestrator(workers=4)
    result = asyncio.run(orch.screen(request(20), dets))
    assert sorted(result.timings_ms) == ["a", "b", "c"]
    assert [name for name, *_ in log] == ["a", "b", "c"]  # in the detectors' order
    assert len({thread for _, thread, _, _ in log}) == 1  # one worker job
    assert all(log[i][3] <= log[i + 1][2] for i in range(2))  # never overlapping
    orch.close()


def test_a_failing_detector_does_not_stop_its_lane() -> None:
    log: list[tuple[str, int, float, float]] = []
    orch = Orchestrator(workers=2)
    result = asyncio.run(orch.screen(request(20), [LaneRaiser(), LaneSleeper("after", 0.01, log)]))
    assert result.errors == ["raiser"]
    assert result.fields["x.after"] is True
    orch.close()


def test_a_lane_cut_off_by_the_deadline_reports_what_finished_in_it() -> None:
    log: list[tuple[str, int, float, float]] = []
    slow = LaneSleeper("slow", 30, log)
    orch = Orchestrator(workers=2)
    result = asyncio.run(orch.screen(request(0.5), [LaneSleeper("fast", 0.01, log), slow]))
    slow.release.set()
    assert result.fields["x.fast"] is True
    assert result.not_scored == ["slow"]
    assert result.fields["cf.llm.prompt.failed_detections"] == ["slow"]
    orch.close()


class Niceness(Detector):
    """Reports the OS priority of the thread it runs in."""

    name = "niceness"
    provides = frozenset({"cf.llm.prompt.token_count"})

    def detect(self, req: ScreenRequest) -> Detection:
        return Detection(fields={"x.nice": os.getpriority(os.PRIO_PROCESS, threading.get_native_id())})


def test_detector_threads_run_at_a_lower_priority_than_the_event_loop() -> None:
    orch = Orchestrator(workers=2)
    result = asyncio.run(orch.screen(request(20), [Niceness()]))
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert result.fields["x.nice"] == min(19, loop_nice + orchestrator.WORKER_NICE)
    orch.close()


def test_a_lane_too_slow_as_a_whole_refuses_only_the_detector_that_overruns() -> None:
    """Costs add up in a lane: the detector that would end past the deadline is refused alone."""
    log: list[tuple[str, int, float, float]] = []
    first, second, other = LaneSleeper("first", 0.0, log), LaneSleeper("second", 0.0, log), Sleeper("other", 0.0)
    orch = Orchestrator(workers=2)
    orch._cost.update({"first": 0.3, "second": 0.3, "other": 0.01})  # measured costs per turn
    result = asyncio.run(orch.screen(request(0.8), [first, second, other]))
    # first alone fits (0.45 s with the margin); first + second (0.9 s) does not, whatever the queue
    assert result.shed == ["second"]
    assert sorted(result.timings_ms) == ["first", "other"]
    orch.close()


def test_not_busy_once_every_job_is_done_whatever_the_float_rounding() -> None:
    """0.1 + 0.2 - 0.1 - 0.2 is not 0.0 in floats: a residue once kept the pool "busy" for good,
    and with a late event loop every later request was refused unscored."""
    orch = Orchestrator(workers=2)
    orch._cost.update({"a": 0.1, "b": 0.2})
    result = asyncio.run(orch.screen(request(20), [Sleeper("a", 0.0), Sleeper("b", 0.0)]))
    assert sorted(result.timings_ms) == ["a", "b"]
    time.sleep(0.05)  # the jobs release their reservations in their worker threads
    assert not orch.busy
    orch.close()
