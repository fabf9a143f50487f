"""The detector interface: every detector is one class with one blocking method.

Detectors run in worker threads under the orchestrator's deadline, so ``detect``
may block (onnxruntime, regexes) but must be thread-safe and should give up on
its own when ``request.deadline`` (a ``time.monotonic()`` value) has passed.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final

from llmwall import bundled


@dataclass(frozen=True)
class TextPart:
    """One string of the request body that is screened, with where it lives."""

    path: tuple[str | int, ...]  # JSON path of the string value in the request body
    text: str
    role: str = "user"  # user / system / assistant / tool / unknown


@dataclass(frozen=True)
class Prompt:
    """The text to screen, extracted from a provider body."""

    format: str  # provider format name, see providers.registry
    parts: tuple[TextPart, ...]
    model: str | None = None
    stream: bool = False

    @property
    def text(self) -> str:
        """The screened text: the parts joined by a blank line."""
        return PART_SEPARATOR.join(p.text for p in self.parts)

    def part_offsets(self) -> list[tuple[int, int]]:
        """(start, end) of each part inside ``text``, to map spans back to parts."""
        out, pos = [], 0
        for p in self.parts:
            out.append((pos, pos + len(p.text)))
            pos += len(p.text) + len(PART_SEPARATOR)
        return out


PART_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ScreenRequest:
    """What a detector gets: the prompt, the request's context, and its deadline."""

    prompt: Prompt
    deadline: float  # time.monotonic() after which the result is no longer wanted
    wanted: frozenset[str] = frozenset()  # canonical fields the rules read
    custom_topics: Mapping[str, str] = field(default_factory=dict)  # label -> description
    #: Set only when the prompt is a model's answer (response screening): the latest user turn
    #: of the request it answers ("" when the request has none). A detector that judges a turn
    #: in its conversation (``Detector.reads_reply_to``) then judges the answer as the agent's
    #: turn after it; the others screen the answer's text as they screen a prompt. None: the
    #: text is the client's. Kept in memory only, like the prompt.
    reply_to: str | None = None


@dataclass(frozen=True)
class Span:
    """A detected span of ``Prompt.text``; kept in memory only, for redaction."""

    start: int
    end: int
    category: str


#: Lane of the pure-Python detectors (PII, secrets, token count): they hold the GIL, so
#: running them in parallel threads gains nothing and costs a hand-off each.
PYTHON_LANE: Final = "python"
#: Lane of the embedded classifiers: one onnxruntime run serves both lite detectors.
LITE_LANE: Final = "lite"


class NotScored(TimeoutError):
    """Raised by ``detect`` when it cannot score this prompt in time.

    The one meaning of "not scored": the deadline passed before or during the work
    (a result that comes too late is no result). The orchestrator counts the detector
    in ``ScreenResult.not_scored`` (and ``llmwall_detector_not_scored``) and its fields
    stay absent, so every rule comparison on them is false, as in Cloudflare. Any
    other exception is a detector *error*. A ``TimeoutError``, so a detector waiting on
    a future with a timeout may simply let that one propagate.
    """


@dataclass
class Detection:
    """A detector's result: canonical field values, plus spans for redaction."""

    fields: dict[str, object]
    spans: list[Span] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)  # non-sensitive extras (scores, device)


class Detector(abc.ABC):
    """One detector. Subclasses set ``name`` and ``provides`` and implement ``detect``."""

    name: ClassVar[str]
    provides: ClassVar[frozenset[str]]  # canonical field names this detector fills
    #: Detectors with the same lane run one after the other in one worker job; None: a lane
    #: of its own. Worth sharing for detectors that hold the GIL throughout (pure Python:
    #: parallel threads only add hand-offs) or that share one model run. See
    #: proxy/orchestrator.py and docs/benchmarks.md ("Where the time goes").
    lane: ClassVar[str | None] = None
    #: Whether ``detect`` reads ``ScreenRequest.reply_to``: response screening then re-reads the
    #: request's latest user turn for it (a cost the other detectors do not cause).
    reads_reply_to: ClassVar[bool] = False
    load_ms: float = 0.0  # how long creating it took; set by build_detectors for the start-up log

    @abc.abstractmethod
    def detect(self, request: ScreenRequest) -> Detection:
        """Score one prompt. Blocking; runs in a worker thread.

        Raises :class:`NotScored` when ``request.deadline`` passes before a result.
        """

    def describe(self) -> str:
        """One line for the start-up log: model, device, coverage."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook: most detectors hold nothing to release
        """Release resources (sessions, threads)."""


@dataclass(frozen=True)
class DetectorConfig:
    """Settings every detector module's ``create(config)`` reads (from addon options)."""

    models_dir: str = field(default_factory=lambda: str(bundled.models_dir()))
    device: str = "auto"  # auto | cpu | cuda
    pii_entities: tuple[str, ...] | None = None  # None: the module's defaults
    pii_min_score: float = 0.5
    spacy_model: str | None = None  # e.g. "en_core_web_lg" when installed
    unsafe_threshold: float = 0.5
    remote_llama_guard: str | None = None  # base URL of an OpenAI-compatible /v1/completions server
    remote_model: str | None = None
