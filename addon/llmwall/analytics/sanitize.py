"""Bounding what an event records, so an odd value can neither leak text nor lose the event.

The model name and the URL path come from the client. The store refuses anything that
is not a short label (its privacy guard), which used to mean a 300-character or
multi-line model name cost the whole event: the request was blocked but never
recorded. Here every client-supplied value is reduced to a bounded, label-like form
first (free text becomes a placeholder), and an event the store would still refuse
is recorded with its odd parts dropped rather than not at all.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import unquote

from llmwall import fields as F
from llmwall.analytics.store import validate_event

#: Stored in place of a model name that does not look like one (free text, control characters).
INVALID: Final = "{invalid}"
#: Stored in place of a path segment that could be free text.
TEXT_SEGMENT: Final = "{text}"
MAX_MODEL: Final = 128
MAX_SEGMENT: Final = 48
MAX_SEGMENTS: Final = 16
#: A model or deployment id: word characters and the punctuation ids use, no spaces.
_MODEL: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
#: A path segment kept as is: an identifier, or a template placeholder with its action.
_SEGMENT: Final = re.compile(r"^[A-Za-z0-9_.~:@{}-]*$")
#: Words inside one segment (``invoke-with-response-stream`` has four); more reads like a sentence.
MAX_WORDS: Final = 4
_SEPARATORS: Final = re.compile(r"[-_.~]")
_HOST: Final = re.compile(r"^[A-Za-z0-9.:\[\]_-]{1,255}$")


def model(name: object) -> str | None:
    """A model name as recorded: as sent when it looks like an id, else ``{invalid}``."""
    if name is None:
        return None
    if not isinstance(name, str) or len(name) > MAX_MODEL or not _MODEL.match(name):
        return INVALID
    return name


def _segment(seg: str) -> str:
    decoded = unquote(seg)
    if (
        len(decoded) > MAX_SEGMENT
        or not _SEGMENT.match(decoded)
        or len(_SEPARATORS.findall(decoded.split(":", 1)[0])) >= MAX_WORDS
    ):
        return TEXT_SEGMENT
    return seg if decoded == seg else decoded


def path(template: str) -> str:
    """A path template with every segment that could be free text replaced, and bounded length."""
    segments = template.split("/")
    out = [_segment(s) for s in segments[: MAX_SEGMENTS + 1]]
    if len(segments) > MAX_SEGMENTS + 1:
        out.append("{more}")
    return "/".join(out) or "/"


def host(name: str) -> str:
    """A host as recorded: a hostname or IP literal, else ``{invalid}``."""
    return name if isinstance(name, str) and _HOST.match(name) else INVALID


def event(ev: dict[str, Any]) -> dict[str, Any]:
    """``ev`` with client-supplied values bounded; odd parts dropped if the store would refuse it."""
    out = dict(ev)
    out["host"] = host(ev.get("host", ""))
    out["model"] = model(ev.get("model"))
    out["path_template"] = path(ev.get("path_template") or "/")
    fields = dict(ev.get("fields") or {})
    if F.REQUEST_MODEL in fields:
        fields[F.REQUEST_MODEL] = model(fields[F.REQUEST_MODEL])
    out["fields"] = fields
    try:
        validate_event(out)
    except ValueError:
        out["fields"], out["matched"], out["redacted"] = {}, [], []
        out = {k: v for k, v in out.items() if v is not None or k in ("model", "rule", "format", "action")}
    return out
