"""One line per screened flow, for the people watching the proxy: the decision without the dashboard.

The ``LLMWall`` addon leaves its decision in ``flow.metadata["llmwall"]``; this addon turns
it into a line in mitmdump's output and into the flow's comment (mitmweb shows comments in
the flow's Comment tab and the optional Comment column, and filters them with ``~comment``).
The line names the action, the deciding rule, the categories (S-codes with their names), the
injection score, detector times and the detectors that were not scored; never prompt text.

How much is printed follows mitmproxy's own options: ``flow_detail=0`` prints nothing,
``1`` (the default) one line per flow with the slowest detector's time, ``2`` and above
adds each detector's time and every matching rule; the lines are logged at ``info``, so
``termlog_verbosity=warn`` hides them too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from mitmproxy import ctx, http

from llmwall import fields
from llmwall.categories import labels

log = logging.getLogger(__name__)

#: Where the LLMWall addon leaves its decision on a flow.
METADATA_KEY = "llmwall"
#: mitmdump's option for how much to print per flow (declared by its Dumper addon).
FLOW_DETAIL = "flow_detail"
#: The word for a screened flow no rule acted on.
PASS = "pass"
#: Category list fields, in display order.
CATEGORY_FIELDS = fields.CATEGORY_FIELDS
INJECTION_FIELD = fields.INJECTION_SCORE


def decision_line(meta: Mapping[str, object], detail: int = 1) -> str:
    """The one-line summary of a decision (the metadata the LLMWall addon records)."""
    status = meta.get("status") or "screened"
    action = str(meta.get("action") or PASS)
    if status != "screened":
        action += f" ({status})"
    parts = [f"llmwall: {action}", f"{meta.get('method', '?')} {meta.get('host', '?')}{meta.get('path_template', '')}"]
    if meta.get("rule"):
        parts.append(f"rule={meta['rule']}")
    matched = [str(m) for m in meta.get("matched") or () if m != meta.get("rule")]  # type: ignore[attr-defined]
    if detail >= 2 and matched:
        parts.append(f"also matched={','.join(matched)}")
    values = meta.get("fields") or {}
    assert isinstance(values, Mapping)
    categories = [str(c) for name in CATEGORY_FIELDS for c in values.get(name) or ()]
    if categories:
        parts.append(f"categories=[{', '.join(labels(categories))}]")
    score = values.get(INJECTION_FIELD)
    if isinstance(score, int):
        parts.append("injection=not scored" if score == fields.INJECTION_NOT_SCORED else f"injection={score}")
    timings = meta.get("timings_ms") or {}
    assert isinstance(timings, Mapping)
    if timings:
        if detail >= 2:
            parts.append("detectors=" + ",".join(f"{name}:{ms:.1f}ms" for name, ms in sorted(timings.items())))
        else:
            parts.append(f"detectors={max(timings.values()):.1f}ms")
    for key, word in (("not_scored", "not_scored"), ("errors", "failed")):
        names = meta.get(key) or ()
        if names:
            parts.append(f"{word}={','.join(map(str, names))}")  # type: ignore[call-overload]
    return " ".join(parts)


class Console:
    """Prints each screened flow's decision and writes it into the flow's comment."""

    def request(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get(METADATA_KEY)
        if not isinstance(meta, Mapping):
            return
        try:
            detail = ctx.options.flow_detail if FLOW_DETAIL in ctx.options else 1
            line = decision_line(meta, detail)
        except Exception as exc:  # a display problem must never touch the flow
            log.error("llmwall: cannot describe the decision: %s", type(exc).__name__)
            return
        flow.comment = line
        if detail > 0:
            log.info(line)
