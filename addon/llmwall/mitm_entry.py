"""Script entry for plain mitmproxy users: ``mitmdump -s addon/llmwall/mitm_entry.py``.

Works from a source checkout without installing the package: the source root
(``addon/``) is put on ``sys.path`` when ``llmwall`` is not importable.

The addons, in chain order (mitmproxy calls each hook on them in this order):

* ``DashboardAddon``: answers requests for the dashboard's host before anything else
  sees them; owns the ``llmwall_dashboard_*`` options.
* ``LLMWall``: discovery, detectors, rules and actions; leaves an event in
  ``flow.metadata["llmwall"]``.
* ``RateLimiter``: counts requests and tokens against ``llmwall_rate_limits`` and may refuse
  the request LLMWall let through; settles completion tokens from the response.
* ``ResponseScreen``: streams LLM answers through and screens them for the rules that
  read ``cf.llm.response.*`` (with ``LLMWall``'s rules and detectors); its response
  hook runs before ``Analytics``' so that it can leave the stream's confirmation there.
* ``Console``: prints one decision line per screened flow and writes it into the flow's
  comment (what mitmweb shows).
* ``Analytics``: records that event in the metrics and the SQLite store, and confirms
  endpoints from their responses; owns ``llmwall_db`` and its retention options.
"""

import importlib.util
import logging
import sys
from pathlib import Path

if importlib.util.find_spec("llmwall") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Presidio logs its device and each of ~34 recognizers at info level on every start; llmwall
#: logs one summary line per detector instead. Set before the import that triggers them.
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

from llmwall.analytics.addon import Analytics  # noqa: E402
from llmwall.analytics.dashboard import DashboardAddon  # noqa: E402
from llmwall.proxy.addon import LLMWall  # noqa: E402
from llmwall.proxy.console import Console  # noqa: E402
from llmwall.ratelimit.addon import RateLimiter  # noqa: E402
from llmwall.responses.addon import ResponseScreen  # noqa: E402

analytics = Analytics()
wall = LLMWall()
# Order matters: the rate limiter reads what LLMWall's request hook found and may refuse the
# request; ResponseScreen (responseheaders/response/error hooks only) must come after LLMWall,
# whose rules and detectors it uses, and before Analytics, whose response hook reads the
# stream confirmation ResponseScreen leaves on the flow. The rate limiter's response hook
# runs first and so counts the completion the upstream produced, before a response rule may
# replace it (a streamed answer is not buffered: its output reservation stands). The console
# and the analytics addon then read the decision left on the flow.
addons = [DashboardAddon(analytics), wall, RateLimiter(), ResponseScreen(wall, analytics), Console(), analytics]
