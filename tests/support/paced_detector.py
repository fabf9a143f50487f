"""A mitmdump script for tests: adds a detector with a fixed cost (a sleep, so no CPU) to llmwall.

With few workers it gives the proxy a known capacity (workers / cost), so a test can
offer more than that and watch admission control answer the excess at once.
"""

import time

from mitmproxy import ctx

from llmwall.detectors.base import Detection, Detector, ScreenRequest

#: Seconds one detection takes.
COST_S = 0.3


class PacedDetector(Detector):
    name = "paced"
    provides = frozenset({"cf.llm.prompt.injection_score"})

    def detect(self, request: ScreenRequest) -> Detection:
        time.sleep(COST_S)
        return Detection(fields={"cf.llm.prompt.injection_score": 90})


class AddPaced:
    def running(self) -> None:
        wall = ctx.master.addons.get("llmwall")
        wall.detectors.append(PacedDetector())


addons = [AddPaced()]
