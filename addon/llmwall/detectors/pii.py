"""PII detection on Presidio, fully offline, with Cloudflare's category names.

Presidio's defaults are unsuitable for a proxy: ``AnalyzerEngine()`` downloads
``en_core_web_lg`` when it is missing, and its e-mail recognizer validates domains
through ``tldextract``'s module-level extractor, which fetches the Public Suffix
List over HTTP on first use.  Both are avoided here:

* the NLP engine is a ``spacy.blank("en")`` tokenizer (no download, no model) that
  only feeds Presidio's context-word enhancer; an installed spaCy NER model can be
  named instead (``spacy_model``) to add PERSON, LOCATION and NRP;
* the e-mail recognizer validates with a ``TLDExtract`` that has no suffix-list URLs
  and no cache directory, i.e. only tldextract's bundled snapshot.

Everything else is Presidio's own pattern recognizers (regexes, checksums, context
words), with three targeted changes documented in ``docs/pii.md``: a windowed phone
recognizer (speed), a linear-time variant of one IN_PAN pattern (speed), and the
stop-word list not hiding recognizers' own context words (recall).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import phonenumbers
import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry
from presidio_analyzer import RecognizerResult
from presidio_analyzer import predefined_recognizers as pr
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.language import Language
from spacy.tokens import Doc

from .. import fields
from .base import Detection, Detector, DetectorConfig, ScreenRequest, Span

log = logging.getLogger(__name__)

PII_DETECTED: Final = "cf.llm.prompt.pii_detected"
PII_CATEGORIES: Final = "cf.llm.prompt.pii_categories"

#: Cloudflare's Firewall-for-AI PII categories (Presidio entity names), in its order.
CLOUDFLARE_CATEGORIES: Final[tuple[str, ...]] = (
    "CREDIT_CARD", "CRYPTO", "DATE_TIME", "EMAIL_ADDRESS", "IBAN_CODE", "IP_ADDRESS",
    "NRP", "LOCATION", "PERSON", "PHONE_NUMBER", "MEDICAL_LICENSE", "URL",
    "US_BANK_NUMBER", "US_DRIVER_LICENSE", "US_ITIN", "US_PASSPORT", "US_SSN",
    "UK_NHS", "UK_NINO", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE", "IT_DRIVER_LICENSE",
    "IT_VAT_CODE", "IT_PASSPORT", "IT_IDENTITY_CARD", "PL_PESEL", "SG_NRIC_FIN",
    "SG_UEN", "AU_ABN", "AU_ACN", "AU_TFN", "AU_MEDICARE", "IN_PAN", "IN_AADHAAR",
    "IN_VEHICLE_REGISTRATION", "IN_VOTER", "IN_PASSPORT", "FI_PERSONAL_IDENTITY_CODE",
)  # fmt: skip

#: Categories that only a spaCy NER model can find (``spacy_model`` option).
NER_CATEGORIES: Final = frozenset({"PERSON", "LOCATION", "NRP"})

#: Noisy, low-value categories left out of the default set (turn on via ``pii_entities``).
OFF_BY_DEFAULT: Final = frozenset({"DATE_TIME", "URL"})

#: A pattern match confirmed by one of its recognizer's context words scores at least this.
#: Presidio's enhancer floor is 0.4, so weak-by-design patterns (US_PASSPORT 0.05,
#: US_BANK_NUMBER 0.05, IT_PASSPORT 0.01, ...) could never pass a 0.5 minimum even with
#: "passport" right before them; at 0.5 they pass the default minimum only with context.
CONTEXT_CONFIRMED_SCORE: Final = 0.5

#: Categories whose match counts only with a context word nearby, although Presidio
#: scores a passing checksum at 1.0: these are bare digit runs (or two letters and
#: seven digits) whose single check digit passes by chance for 1 number in 10-89, so
#: order numbers, Unix timestamps and phone numbers would otherwise be reported.
CONTEXT_REQUIRED: Final = frozenset({
    "UK_NHS", "IN_AADHAAR", "AU_ABN", "AU_ACN", "AU_TFN", "AU_MEDICARE", "PL_PESEL",
    "IT_VAT_CODE", "MEDICAL_LICENSE",
})  # fmt: skip

#: Text right before a match that marks it as something else: a version, not an IP;
#: the tail of a longer hyphenated number (order 112-3456789-1234567), not a card.
NOT_PII_BEFORE: Final[dict[str, re.Pattern[str]]] = {
    "IP_ADDRESS": re.compile(r"(?:\bv|\bversion|\bver\.?|\brelease|\bbuild|==|>=|<=|~=|@)\s*[:=]?\s*$", re.I),
    "CREDIT_CARD": re.compile(r"\d[-.]?$"),
}
#: Card numbers are written unbroken or in their printed groups (4-4-4-4[-1..3],
#: Amex/Diners 4-6-5 / 4-6-4); Presidio accepts any separators, so a Luhn-passing
#: 7-7 order number would count.
_CARD_GROUPS: Final = re.compile(r"\d{12,19}|\d{4}([ -])\d{6}\1\d{4,5}|\d{4}([ -])\d{4}(?:\2\d{4}){1,2}(?:\2\d{1,3})?")

#: Presidio's phone context minus "number", which sits next to every order number.
PHONE_CONTEXT: Final = ("phone", "telephone", "tel", "cell", "cellphone", "mobile", "call")

#: Where a phone number may be: 7+ digits with the separators phone formats use.
_PHONE_CANDIDATE: Final = re.compile(r"[+(]?\d(?:[ \t\-./()]{0,3}\d){6,}")
#: Characters kept around a candidate so libphonenumber's leniency checks (letters or
#: digits touching the number, "ext. 123") see the same neighbourhood as in the full text.
_PHONE_MARGIN: Final = 16


#: spaCy NER labels -> Presidio categories used when ``spacy_model`` is set.
_NER_LABELS: Final = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION",
                      "LOCATION": "LOCATION", "NORP": "NRP"}  # fmt: skip


class OfflineEmailRecognizer(pr.EmailRecognizer):
    """Presidio's e-mail recognizer validating TLDs against tldextract's bundled list only."""

    def __init__(self) -> None:
        super().__init__()
        # No URLs: never fetch the suffix list; no cache dir: never read or write disk.
        self._tld = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())
        self._tld("warm.example.com")  # build the suffix trie now, not on the first request

    def validate_result(self, pattern_text: str) -> bool:
        """A match counts only when its domain ends in a public suffix."""
        return self._tld(pattern_text).fqdn != ""


class WindowedPhoneRecognizer(pr.PhoneRecognizer):
    """Presidio's phone recognizer run only around digit runs that could be numbers.

    ``PhoneNumberMatcher`` scans the whole text once per region (8 regions); on prose
    with no 7-digit run there is nothing to find, and on long prompts the windows are
    a small fraction of the text.  Results are identical as long as a number and its
    extension fit in one window.
    """

    def __init__(self) -> None:
        super().__init__(context=list(PHONE_CONTEXT))

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Match each region's numbers inside the candidate windows, in text offsets."""
        results: list[RecognizerResult] = []
        for lo, hi in _windows(text):
            window = text[lo:hi]
            for region in self.supported_regions:
                for match in phonenumbers.PhoneNumberMatcher(window, region, leniency=self.leniency):
                    found = phonenumbers.region_code_for_number(match.number) or region
                    res = self._get_recognizer_result(match, window, found, nlp_artifacts)
                    res.start += lo
                    res.end += lo
                    results.append(res)
        return EntityRecognizer.remove_duplicates(results)


def _windows(text: str) -> list[tuple[int, int]]:
    """Merged (start, end) windows around phone-number candidates."""
    out: list[tuple[int, int]] = []
    for m in _PHONE_CANDIDATE.finditer(text):
        lo, hi = max(0, m.start() - _PHONE_MARGIN), min(len(text), m.end() + _PHONE_MARGIN)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _in_pan() -> EntityRecognizer:
    """IN_PAN without Presidio's "PAN (Low)" pattern: any 10-character word with a letter
    and four digits, whose unbounded look-aheads (``(?=.*?[0-9]{4})``) also rescan the
    rest of the text at every word start (30 ms on a 750-word prompt)."""
    patterns = [p for p in pr.InPanRecognizer.PATTERNS if p.name != "PAN (Low)"]
    return pr.InPanRecognizer(patterns=patterns, supported_language="en")


def _en(cls: type[EntityRecognizer]) -> Callable[[], EntityRecognizer]:
    """Factory for a recognizer declared for another language (es, it, pl, fi), run on 'en'."""
    return lambda: cls(supported_language="en")


def _strict(cls: type[EntityRecognizer]) -> Callable[[], EntityRecognizer]:
    """Factory for a recognizer whose validator answers None ("no opinion") on a failed
    check: there a failed check character or an unknown state code rejects the match."""

    class Strict(cls):  # type: ignore[misc, valid-type]
        def validate_result(self, pattern_text: str) -> bool:
            return super().validate_result(pattern_text) is True

    Strict.__name__ = Strict.__qualname__ = f"Strict{cls.__name__}"
    return lambda: Strict(supported_language="en")


#: Category -> factory of the Presidio recognizer that finds it without a model.
PATTERN_RECOGNIZERS: Final[dict[str, Callable[[], EntityRecognizer]]] = {
    "CREDIT_CARD": _en(pr.CreditCardRecognizer),
    "CRYPTO": _en(pr.CryptoRecognizer),
    "DATE_TIME": _en(pr.DateRecognizer),
    "EMAIL_ADDRESS": OfflineEmailRecognizer,
    "IBAN_CODE": _en(pr.IbanRecognizer),
    "IP_ADDRESS": _en(pr.IpRecognizer),
    "PHONE_NUMBER": WindowedPhoneRecognizer,
    "MEDICAL_LICENSE": _en(pr.MedicalLicenseRecognizer),
    "URL": _en(pr.UrlRecognizer),
    "US_BANK_NUMBER": _en(pr.UsBankRecognizer),
    "US_DRIVER_LICENSE": _en(pr.UsLicenseRecognizer),
    "US_ITIN": _en(pr.UsItinRecognizer),
    "US_PASSPORT": _en(pr.UsPassportRecognizer),
    "US_SSN": _en(pr.UsSsnRecognizer),
    "UK_NHS": _en(pr.NhsRecognizer),
    "UK_NINO": _en(pr.UkNinoRecognizer),
    "ES_NIF": _en(pr.EsNifRecognizer),
    "ES_NIE": _en(pr.EsNieRecognizer),
    "IT_FISCAL_CODE": _strict(pr.ItFiscalCodeRecognizer),
    "IT_DRIVER_LICENSE": _en(pr.ItDriverLicenseRecognizer),
    "IT_VAT_CODE": _en(pr.ItVatCodeRecognizer),
    "IT_PASSPORT": _en(pr.ItPassportRecognizer),
    "IT_IDENTITY_CARD": _en(pr.ItIdentityCardRecognizer),
    "PL_PESEL": _en(pr.PlPeselRecognizer),
    "SG_NRIC_FIN": _en(pr.SgFinRecognizer),
    "SG_UEN": _en(pr.SgUenRecognizer),
    "AU_ABN": _en(pr.AuAbnRecognizer),
    "AU_ACN": _en(pr.AuAcnRecognizer),
    "AU_TFN": _en(pr.AuTfnRecognizer),
    "AU_MEDICARE": _en(pr.AuMedicareRecognizer),
    "IN_PAN": _in_pan,
    "IN_AADHAAR": _en(pr.InAadhaarRecognizer),
    "IN_VEHICLE_REGISTRATION": _strict(pr.InVehicleRegistrationRecognizer),
    "IN_VOTER": _en(pr.InVoterRecognizer),
    "IN_PASSPORT": _en(pr.InPassportRecognizer),
    "FI_PERSONAL_IDENTITY_CODE": _en(pr.FiPersonalIdentityCodeRecognizer),
}

#: What runs when ``pii_entities`` is not set: every offline category but the noisy ones.
DEFAULT_CATEGORIES: Final = frozenset(PATTERN_RECOGNIZERS) - OFF_BY_DEFAULT


def _lemma(token_lower: str) -> str:
    """A crude English lemma (plural 's' dropped) so "cards" meets the context word "card".

    The blank pipeline has no lemmatizer and Presidio's enhancer compares lemmas.
    """
    if len(token_lower) > 3 and token_lower.endswith("s") and not token_lower.endswith("ss"):
        return token_lower[:-1]
    return token_lower


class OfflineSpacyEngine(SpacyNlpEngine):
    """Presidio NLP engine over an already loaded spaCy pipeline; never loads or downloads.

    spaCy pipelines are not documented as thread-safe (the tokenizer mutates caches),
    so calls are serialised by a lock; tokenising is a small share of the analysis.
    """

    engine_name = "llmwall-offline-spacy"

    def __init__(self, nlp: Language, keep_words: Iterable[str] = ()) -> None:
        super().__init__(
            models=[{"lang_code": "en", "model_name": nlp.meta.get("name", "blank")}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping=dict(_NER_LABELS),
                labels_to_ignore=sorted(_ner_labels_to_ignore(nlp)),
            ),
        )
        self.nlp = {"en": nlp}
        self._keep = frozenset(w.lower() for w in keep_words)
        self._lock = threading.Lock()

    def load(self) -> None:
        """Nothing to load: the pipeline was given at construction (no download path)."""

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Tokenise (and tag entities, with an NER model) under the pipeline lock."""
        with self._lock:
            doc = self.nlp[language](text)
        return self._doc_to_nlp_artifact(doc, language)

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(
            list(doc.ents), self._get_scores_for_entities(doc)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lemma_.lower() if t.lemma_ else _lemma(t.lower_) for t in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )

    def is_stopword(self, word: str, language: str) -> bool:
        """spaCy's stop words, except recognizers' context words ("call" is a stop word)."""
        return word.lower() not in self._keep and super().is_stopword(word, language)


class PhraseContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's whole-word context matching, plus multi-word context phrases.

    Presidio compares single lemmas, so context phrases of its own recognizers
    ("partita iva", "national insurance", "tax file number") never match; the
    phrases made of the last few words before a match are added as candidates.
    """

    PHRASE_WINDOW: Final = 8  # words before the match that phrases are built from

    def _extract_surrounding_words(self, nlp_artifacts: NlpArtifacts, word: str, start: int) -> list[str]:
        words = super()._extract_surrounding_words(nlp_artifacts=nlp_artifacts, word=word, start=start)
        doc = nlp_artifacts.tokens
        if not doc:
            return words
        end = bisect.bisect_left(nlp_artifacts.tokens_indices, start)
        before = [t.lower_ for t in doc[max(0, end - self.PHRASE_WINDOW) : end] if not t.is_punct]
        for n in range(2, 6):
            words.extend(" ".join(before[i : i + n]) for i in range(len(before) - n + 1))
        return words


def _ner_labels_to_ignore(nlp: Language) -> set[str]:
    """Every label the pipeline can emit that is not PERSON / LOCATION / NRP."""
    labels: set[str] = set()
    for _, pipe in nlp.pipeline:
        labels.update(getattr(pipe, "labels", ()) or ())
    return {lab for lab in labels if lab not in _NER_LABELS}


def _load_spacy(spacy_model: str | None) -> Language:
    """A blank English tokenizer, or an installed NER pipeline; never a download."""
    if spacy_model is None:
        return spacy.blank("en")
    if not (spacy.util.is_package(spacy_model) or Path(spacy_model).exists()):
        raise ValueError(
            f"spaCy model {spacy_model!r} is not installed; llmwall never downloads models "
            f"(install it, e.g. `pip install {spacy_model}` from a wheel, or unset spacy_model)"
        )
    return spacy.load(spacy_model, exclude=["parser", "lemmatizer", "textcat"])


def resolve_categories(
    entities: Iterable[str] | None, spacy_model: str | None, extra: Iterable[str] = ()
) -> tuple[frozenset[str], frozenset[str]]:
    """(enabled, wanted-but-unavailable) categories for a configuration.

    Unknown names raise ValueError (a typo must not silently disable detection);
    NER categories without a model are returned as unavailable, not an error, so a
    rule that reads PERSON does not stop the proxy from starting.
    """
    wanted = set(DEFAULT_CATEGORIES if entities is None else entities) | set(extra)
    if entities is None and spacy_model:
        wanted |= NER_CATEGORIES
    unknown = wanted - set(CLOUDFLARE_CATEGORIES)
    if unknown:
        raise ValueError(
            f"unknown PII categories {sorted(unknown)}; known: {', '.join(CLOUDFLARE_CATEGORIES)}"
        )
    available = set(PATTERN_RECOGNIZERS) | (NER_CATEGORIES if spacy_model else set())
    return frozenset(wanted & available), frozenset(wanted - available)


@functools.cache
def _engine(categories: frozenset[str], spacy_model: str | None) -> AnalyzerEngine:
    """One AnalyzerEngine per configuration per process (loading costs ~1 s)."""
    recognizers = [PATTERN_RECOGNIZERS[c]() for c in sorted(categories & set(PATTERN_RECOGNIZERS))]
    if categories & NER_CATEGORIES:
        recognizers.append(
            pr.SpacyRecognizer(supported_language="en", supported_entities=sorted(categories & NER_CATEGORIES))
        )
    context_words = {w for r in recognizers for w in (r.context or [])}
    engine = AnalyzerEngine(
        registry=RecognizerRegistry(recognizers=recognizers, supported_languages=["en"]),
        nlp_engine=OfflineSpacyEngine(_load_spacy(spacy_model), keep_words=context_words),
        supported_languages=["en"],
        context_aware_enhancer=PhraseContextEnhancer(
            min_score_with_context_similarity=CONTEXT_CONFIRMED_SCORE,
            context_matching_mode="whole_word",
        ),
    )
    # Presidio loads recognizers and compiles regexes lazily on first use; do it now,
    # single-threaded, so concurrent detect() calls only ever read shared state.
    engine.analyze("warm-up 4111 1111 1111 1111 a@b.com", language="en")
    return engine


_ENGINE_LOCK: Final = threading.Lock()


class PiiDetector(Detector):
    """Fills ``cf.llm.prompt.pii_detected`` / ``pii_categories`` and returns PII spans."""

    name = "pii"
    provides = fields.PII_FIELDS

    def __init__(
        self,
        entities: Sequence[str] | None = None,
        min_score: float = 0.5,
        spacy_model: str | None = None,
        extra_entities: Iterable[str] = (),
    ) -> None:
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"pii_min_score must be within [0, 1], got {min_score}")
        self.categories, self.unavailable = resolve_categories(entities, spacy_model, extra_entities)
        self.min_score = min_score
        self.spacy_model = spacy_model
        with _ENGINE_LOCK:  # functools.cache may otherwise build the same engine twice
            self._engine = _engine(self.categories, spacy_model)
        self._entities = sorted(self.categories)
        if self.unavailable:
            log.warning(
                "PII categories %s need a spaCy NER model (spacy_model option); not detected",
                ", ".join(sorted(self.unavailable)),
            )
        log.info("PII detector: %s", self.describe())

    def detect(self, request: ScreenRequest) -> Detection:
        """Analyze the whole prompt text; categories are sorted, spans in text offsets."""
        if time.monotonic() >= request.deadline:
            raise TimeoutError("pii: deadline passed before analysis started")
        text = request.prompt.text
        results = (
            self._engine.analyze(
                text,
                language="en",
                entities=self._entities,
                score_threshold=self.min_score,
                return_decision_process=True,  # to see which context word confirmed a match
            )
            if text.strip() and self._entities
            else []
        )
        spans = _clean([_trimmed(r, text) for r in results if _accepted(r, text)])
        categories = sorted({s.category for s in spans})
        return Detection(
            fields={PII_DETECTED: bool(categories), PII_CATEGORIES: categories},
            spans=spans,
        )

    def describe(self) -> str:
        """Coverage for the start-up log."""
        ner = self.spacy_model or "none (blank spaCy tokenizer)"
        return (
            f"pii: presidio, offline, NER model {ner}, min score {self.min_score}, "
            f"{len(self.categories)} categories: {', '.join(sorted(self.categories))}"
        )


def _accepted(result: RecognizerResult, text: str) -> bool:
    """llmwall's false-positive filters on top of Presidio's scores."""
    if result.entity_type in CONTEXT_REQUIRED:
        explanation = result.analysis_explanation
        if explanation is None or not explanation.supportive_context_word:
            return False
    veto = NOT_PII_BEFORE.get(result.entity_type)
    if veto and veto.search(text, max(0, result.start - 24), result.start):
        return False
    value = text[result.start : result.end].strip()
    if result.entity_type == "CREDIT_CARD":
        return _CARD_GROUPS.fullmatch(value) is not None
    if result.entity_type == "IP_ADDRESS":
        return _identifies_a_host(value)
    return True


def _identifies_a_host(value: str) -> bool:
    """Unspecified and loopback addresses (0.0.0.0, 127.0.0.1, ::1) identify nobody."""
    try:
        ip = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return True  # Presidio's forms we cannot parse here (embedded, mapped): keep
    return not (ip.is_unspecified or ip.is_loopback)


def _trimmed(result: RecognizerResult, text: str) -> Span:
    """The result as a span without surrounding whitespace (some patterns eat a space)."""
    start, end = result.start, result.end
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end, result.entity_type)


def _clean(spans: list[Span]) -> list[Span]:
    """Sorted spans without URL pieces of e-mail addresses ("jane.do", "example.com")."""
    emails = [s for s in spans if s.category == "EMAIL_ADDRESS"]
    kept = [
        s
        for s in spans
        if s.end > s.start
        and not (s.category == "URL" and any(e.start <= s.start and s.end <= e.end for e in emails))
    ]
    return sorted(set(kept), key=lambda s: (s.start, s.end, s.category))


def create(config: DetectorConfig) -> PiiDetector:
    """Build the detector from the addon options; the engine is shared per process."""
    return PiiDetector(
        entities=config.pii_entities,
        min_score=config.pii_min_score,
        spacy_model=config.spacy_model,
    )


__all__ = [
    "CLOUDFLARE_CATEGORIES",
    "DEFAULT_CATEGORIES",
    "NER_CATEGORIES",
    "OFF_BY_DEFAULT",
    "PATTERN_RECOGNIZERS",
    "PiiDetector",
    "create",
    "resolve_categories",
]

