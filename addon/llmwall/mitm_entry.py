"""Script entry for plain mitmproxy users: ``mitmdump -s addon/llmwall/mitm_entry.py``.

Works from a source checkout without installing the package: the source root
(``addon/``) is put on ``sys.path`` when ``llmwall`` is not importable.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("llmwall") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmwall.proxy.addon import LLMWall
from llmwall.responses.addon import ResponseScreen

_wall = LLMWall()
# ResponseScreen first: its response hook leaves the stream's confirmation for LLMWall's.
addons = [ResponseScreen(_wall), _wall]
