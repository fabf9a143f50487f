"""Script entry for plain mitmproxy users: ``mitmdump -s addon/llmwall/mitm_entry.py``.

Works from a source checkout without installing the package: the source root
(``addon/``) is put on ``sys.path`` when ``llmwall`` is not importable.
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

from llmwall.proxy.addon import LLMWall  # noqa: E402
from llmwall.proxy.console import Console  # noqa: E402

# Order matters: the console reads the decision LLMWall leaves on the flow.
addons = [LLMWall(), Console()]
