"""A mitmdump script for tests: adds a deliberately slow and a crashing detector to llmwall.

Loaded after llmwall's own entry script (``-s mitm_entry.py -s extra_detectors.py``);
it appends its detectors to the running llmwall addon, so the real orchestrator,
deadline and rules engine are what the tests exercise.
"""

import threading

from mitmproxy import ctx

from llmwall.detectors.base import Detection, Detector, ScreenRequest


class SlowDetector(Detector):
    """Waits far past any test deadline (60 s, or until shutdown), then claims an injection."""

    name = "slow"
    provides = frozenset({"cf.llm.prompt.injection_score"})

    def __init__(self) -> None:
        self.stop = threading.Event()

    def detect(self, request: ScreenRequest) -> Detection:
        self.stop.wait(60)
        return Detection(fields={"cf.llm.prompt.injection_score": 1})


class CrashingDetector(Detector):
    """Raises with the prompt in the message, which must never reach the log."""

    name = "crashing"
    provides = frozenset({"cf.llm.prompt.secret_detected"})

    def detect(self, request: ScreenRequest) -> Detection:
        raise RuntimeError(f"boom on {request.prompt.text}")


class AddDetectors:
    def __init__(self) -> None:
        self.slow = SlowDetector()

    def running(self) -> None:
        wall = ctx.master.addons.get("llmwall")
        wall.detectors.extend([self.slow, CrashingDetector()])

    def done(self) -> None:
        self.slow.stop.set()  # lets mitmdump exit without waiting for the worker thread


addons = [AddDetectors()]
