"""Script entry for plain mitmproxy users: ``mitmdump -s addon/llmwall/mitm_entry.py``.

Works from a source checkout without installing the package: the source root
(``addon/``) is put on ``sys.path`` when ``llmwall`` is not importable.

The addons, in chain order (mitmproxy calls each hook on them in this order):

* ``DashboardAddon``: answers requests for the dashboard's host before anything else
  sees them; owns the ``llmwall_dashboard_*`` options.
* ``LLMWall``: discovery, detectors, rules and actions; leaves an event in
  ``flow.metadata["llmwall"]``.
* ``ResponseScreen``: streams LLM answers through and screens them for the rules that
  read ``cf.llm.response.*`` (with ``LLMWall``'s rules and detectors); its response
  hook runs before ``Analytics``' so that it can leave the stream's confirmation there.
* ``Analytics``: records that event in the metrics and the SQLite store, and confirms
  endpoints from their responses; owns ``llmwall_db`` and its retention options.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("llmwall") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmwall.analytics.addon import Analytics
from llmwall.analytics.dashboard import DashboardAddon
from llmwall.proxy.addon import LLMWall
from llmwall.responses.addon import ResponseScreen

analytics = Analytics()
wall = LLMWall()
addons = [DashboardAddon(analytics), wall, ResponseScreen(wall, analytics), analytics]
