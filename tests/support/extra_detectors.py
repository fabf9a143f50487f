"""A mitmdump script for tests: adds a deliberately slow and a crashing detector to llmwall.

Loaded after llmwall's own entry script (``-s mitm_entry.py -s extra_detectors.py``);
it appends its detectors to the running llmwall addon, so the real orchestrator,
deadline and rules engine are what the tests exercise.
"""

import time

from mitmproxy import ctx

from llmwall.detectors.base import Detection, Detector, ScreenRequest


class SlowDetector(Detector):
    """Sleeps far past any test deadline, then claims an injection."""

    name = "slow"
    provides = frozenset({"cf.llm.prompt.injection_score"})

    def detect(self, request: ScreenRequest) -> Detection:
        time.sleep(10)
        return Detection(fields={"cf.llm.prompt.injection_score": 1})


class CrashingDetector(Detector):
    """Raises with the prompt in the message, which must never reach the log."""

    name = "crashing"
    provides = frozenset({"cf.llm.prompt.secret_detected"})

    def detect(self, request: ScreenRequest) -> Detection:
        raise RuntimeError(f"boom on {request.prompt.text}")


class AddDetectors:
    def running(self) -> None:
        wall = ctx.master.addons.get("llmwall")
        wall.detectors.extend([SlowDetector(), CrashingDetector()])


addons = [AddDetectors()]
