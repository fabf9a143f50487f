"""PII detection on Presidio, fully offline, with Cloudflare's category names.

Presidio's defaults are unsuitable for a proxy: ``AnalyzerEngine()`` downloads
``en_core_web_lg`` when it is missing, and its e-mail recognizer validates domains
through ``tldextract``'s module-level extractor, which fetches the Public Suffix
List over HTTP on first use.  Both are avoided here:

* the NLP engine (``OfflineNlpEngine``) loads nothing: it tokenises with a regular
  expression and spaCy's English stop-word list, which is all Presidio's context-word
  enhancer needs; an installed spaCy NER pipeline can be named (``spacy_model``) to
  add PERSON, LOCATION and NRP, and is never downloaded;
* the e-mail recognizer validates with a ``TLDExtract`` that has no suffix-list URLs
  and no cache directory, i.e. only tldextract's bundled snapshot.

Everything else is Presidio's own pattern recognizers (regexes, checksums, context
words), run through ``FastAnalyzer``: the results of ``AnalyzerEngine.analyze`` without
its per-call overhead.  llmwall's changes on top (speed and false positives) are listed
and justified in ``docs/pii.md``.
"""

from __future__ import annotations

import bisect
import copy
import functools
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import phonenumbers
import regex
import spacy
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer import predefined_recognizers as pr
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.pattern_recognizer import REGEX_TIMEOUT_SECONDS
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.language import Language

from llmwall import fields
from llmwall.categories import PII_CATEGORIES as CLOUDFLARE_PII_CATEGORIES
from llmwall.detectors import pattern_needs
from llmwall.detectors.base import PYTHON_LANE, Detection, Detector, DetectorConfig, NotScored, ScreenRequest, Span
from llmwall.fields import PII_CATEGORIES, PII_DETECTED

log = logging.getLogger(__name__)


#: Cloudflare's Firewall-for-AI PII categories (Presidio entity names), in its order.
CLOUDFLARE_CATEGORIES: Final[tuple[str, ...]] = CLOUDFLARE_PII_CATEGORIES

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
    "IT_VAT_CODE", "MEDICAL_LICENSE", "SG_UEN",
})  # fmt: skip

#: Text right before a match that marks it as something else: a version, not an IP;
#: the tail of a longer hyphenated number (order 112-3456789-1234567), not a card; the
#: user part of a URL, not an e-mail address.
NOT_PII_BEFORE: Final[dict[str, re.Pattern[str]]] = {
    "IP_ADDRESS": re.compile(
        r"(?:\bv|\bversion|\bver\.?|\brelease|\bbuild|\bsection|§|==|>=|<=|~=)\s*[:=\-]?\s*$|\d\.$", re.I
    ),
    "CREDIT_CARD": re.compile(r"\d[-.]?$"),
    # the user part of a URL ("ssh://id@host", "http://user:pass@host") is not a mailbox
    "EMAIL_ADDRESS": re.compile(r"://(?:[^\s/@:]*:)?$"),
}
_DOTTED_TAIL: Final = re.compile(r"\.\d")
#: Card numbers are written unbroken or in their printed groups (4-4-4-4[-1..3],
#: Amex/Diners 4-6-5 / 4-6-4); Presidio accepts any separators, so a Luhn-passing
#: 7-7 order number would count.
_CARD_GROUPS: Final = re.compile(r"\d{12,19}|\d{4}([ -])\d{6}\1\d{4,5}|\d{4}([ -])\d{4}(?:\2\d{4}){1,2}(?:\2\d{1,3})?")

#: Presidio's driver-license context minus "license" and "lic": every source file's
#: licence header ("under the License") sits next to numbers and issue ids.
US_DRIVER_LICENSE_CONTEXT: Final = ["driver", "driving", "permit", "identification", "dls", "cdls", "lic#"]

#: Presidio's phone context minus "number", which sits next to every order number.
PHONE_CONTEXT: Final = frozenset({"phone", "telephone", "tel", "cell", "cellphone", "mobile", "call"})

#: Longest e-mail address looked for on each side of its "@" (RFC 5321: 64 + 255).
_EMAIL_SPAN: Final = 320
_DIGITS: Final = re.compile(r"\d+")
#: Characters kept on each side of a digit run for the digit-windowed recognizers.
_DIGIT_MARGIN: Final = 64

#: Where a phone number may be: 7+ digits with the separators phone formats use.
_PHONE_CANDIDATE: Final = re.compile(r"[+(]?\d(?:[ \t\-./()]{0,3}\d){6,}")
#: Characters kept around a candidate so libphonenumber's leniency checks (letters or
#: digits touching the number, "ext. 123") see the same neighbourhood as in the full text.
_PHONE_MARGIN: Final = 16


#: Words, for context words (spaCy's tokenizer yields the same words plus
#: punctuation, which context matching skips, at about six times the cost).
_WORD: Final = re.compile(r"\w+")

#: Score of an NER finding (Presidio's SpacyRecognizer default).
NER_SCORE: Final = 0.85

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

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None, regex_flags: int | None = None
    ) -> list[RecognizerResult]:
        """Run the (costly) e-mail pattern only on the words around each "@"."""
        out: list[RecognizerResult] = []
        for lo, hi in _at_windows(text):
            for result in super().analyze(text[lo:hi], entities, nlp_artifacts, regex_flags):
                result.start += lo
                result.end += lo
                out.append(result)
        return out

    def validate_result(self, pattern_text: str) -> bool:
        """A match counts only when its domain ends in a public suffix."""
        return self._tld(pattern_text).fqdn != ""


def _at_windows(text: str) -> list[tuple[int, int]]:
    """Whitespace-delimited runs around each "@" (an address has no whitespace), merged."""
    out: list[tuple[int, int]] = []
    pos = text.find("@")
    while pos != -1:
        lo = max(text.rfind(c, max(0, pos - _EMAIL_SPAN), pos) for c in " \t\r\n") + 1
        lo = max(lo, pos - _EMAIL_SPAN)
        ends = [e for e in (text.find(c, pos, pos + _EMAIL_SPAN) for c in " \t\r\n") if e != -1]
        hi = min(ends) if ends else min(len(text), pos + _EMAIL_SPAN)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
        pos = text.find("@", pos + 1)
    return out


def digit_windows(text: str, margin: int) -> list[tuple[int, int]]:
    """Whitespace-aligned windows reaching ``margin`` characters around each digit run."""
    out: list[tuple[int, int]] = []
    n = len(text)
    for m in _DIGITS.finditer(text):
        lo, hi = max(0, m.start() - margin), min(n, m.end() + margin)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)
            continue
        out.append((lo, hi))
    aligned: list[tuple[int, int]] = []
    for lo, hi in out:
        while lo > 0 and not text[lo - 1].isspace():
            lo -= 1
        while hi < n and not text[hi].isspace():
            hi += 1
        if aligned and lo <= aligned[-1][1]:
            aligned[-1] = (aligned[-1][0], max(hi, aligned[-1][1]))
        else:
            aligned.append((lo, hi))
    return aligned


class WindowedPhoneRecognizer(pr.PhoneRecognizer):
    """Presidio's phone recognizer run only around digit runs that could be numbers.

    ``PhoneNumberMatcher`` scans the whole text once per region (8 regions); on prose
    with no 7-digit run there is nothing to find, and on long prompts the windows are
    a small fraction of the text.  Results are identical as long as a number and its
    extension fit in one window.
    """

    def __init__(self, needs_context: bool = False) -> None:
        super().__init__(context=sorted(PHONE_CONTEXT))
        # When the minimum score is above the phone score (0.4), only numbers with a
        # context word can ever be reported: skip the others before libphonenumber.
        self.needs_context = needs_context

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Match each region's numbers inside the candidate windows, in text offsets."""
        results: list[RecognizerResult] = []
        candidates: Iterable[re.Match[str]] = _PHONE_CANDIDATE.finditer(text)
        if self.needs_context and nlp_artifacts is not None:
            keywords = keyword_set(nlp_artifacts)
            if keywords.isdisjoint(PHONE_CONTEXT):
                return []
            candidates = (
                m
                for m in candidates
                if not PHONE_CONTEXT.isdisjoint(context_words(nlp_artifacts, keywords, m.start(), phrase_window=0))
            )
        for lo, hi, international in _windows(text, candidates):
            window = text[lo:hi]
            # "+44 20 ..." parses the same whatever the default region: try one
            for region in self.supported_regions[:1] if international else self.supported_regions:
                for match in phonenumbers.PhoneNumberMatcher(
                    window, region, leniency=self.leniency if self.leniency is not None else 1
                ):
                    found = phonenumbers.region_code_for_number(match.number) or region
                    res = self._get_recognizer_result(match, window, found, nlp_artifacts)
                    res.start += lo
                    res.end += lo
                    results.append(res)
        return EntityRecognizer.remove_duplicates(results)


def _windows(text: str, candidates: Iterable[re.Match[str]]) -> list[tuple[int, int, bool]]:
    """Merged (start, end, all-international) windows around phone-number candidates."""
    out: list[tuple[int, int, bool]] = []
    for m in candidates:
        lo, hi = max(0, m.start() - _PHONE_MARGIN), min(len(text), m.end() + _PHONE_MARGIN)
        international = m.group().startswith("+")
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi, out[-1][2] and international)
        else:
            out.append((lo, hi, international))
    return out


class DigitWindowed:
    """Mixin: run a pattern recognizer only on the windows around digits.

    Every pattern of these recognizers needs a digit, and a long prompt is mostly
    prose; the windows (whitespace-aligned, ``_DIGIT_MARGIN`` characters around each
    digit run, so a 42-character IBAN fits) are computed once per prompt by
    ``OfflineNlpEngine``.  Results are the same as on the whole text
    (tests/test_pii.py compares both).
    """

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None, regex_flags=None
    ) -> list[RecognizerResult]:
        windows = getattr(nlp_artifacts, "digit_windows", None)
        if windows is None:
            # a mixin: the recognizer it is mixed into comes next in the MRO, mypy cannot see it
            return super().analyze(text, entities, nlp_artifacts, regex_flags)  # type: ignore[misc]
        out: list[RecognizerResult] = []
        for lo, hi in windows:
            for result in super().analyze(text[lo:hi], entities, nlp_artifacts, regex_flags):  # type: ignore[misc]
                result.start += lo
                result.end += lo
                out.append(result)
        return out


class StrictValidation:
    """Mixin for recognizers whose validator answers None ("no opinion") on a failed
    check: there a failed check character or an unknown state code rejects the match."""

    def validate_result(self, pattern_text: str) -> bool:
        # a mixin, like DigitWindowed: the recognizer's validate_result is next in the MRO
        return super().validate_result(pattern_text) is True  # type: ignore[misc]


def _en(cls: type[EntityRecognizer], *mixins: type, **kwargs: object) -> Callable[[], EntityRecognizer]:
    """Factory for a digit-windowed recognizer, run on 'en' (some are declared for
    es, it, pl or fi: their patterns and context words apply to any prompt)."""
    windowed = type(cls.__name__, (*mixins, DigitWindowed, cls), {})
    return lambda: windowed(supported_language="en", **kwargs)


def _strict(cls: type[EntityRecognizer]) -> Callable[[], EntityRecognizer]:
    return _en(cls, StrictValidation)


#: IN_PAN without Presidio's "PAN (Low)" pattern: any 10-character word with a letter
#: and four digits, whose unbounded look-aheads (``(?=.*?[0-9]{4})``) also rescan the
#: rest of the text at every word start (30 ms on a 750-word prompt).
_IN_PAN_PATTERNS: Final = [p for p in pr.InPanRecognizer.PATTERNS if p.name != "PAN (Low)"]


#: Category -> factory of the Presidio recognizer that finds it without a model.
PATTERN_RECOGNIZERS: Final[dict[str, Callable[[], EntityRecognizer]]] = {
    "CREDIT_CARD": _en(pr.CreditCardRecognizer),
    "CRYPTO": lambda: pr.CryptoRecognizer(),  # base58/bech32 addresses need not hold a digit
    "DATE_TIME": _en(pr.DateRecognizer),
    "EMAIL_ADDRESS": OfflineEmailRecognizer,
    "IBAN_CODE": _en(pr.IbanRecognizer),
    "IP_ADDRESS": _en(pr.IpRecognizer),
    "PHONE_NUMBER": WindowedPhoneRecognizer,
    "MEDICAL_LICENSE": _en(pr.MedicalLicenseRecognizer),
    "URL": lambda: pr.UrlRecognizer(),
    "US_BANK_NUMBER": _en(pr.UsBankRecognizer),
    "US_DRIVER_LICENSE": _en(pr.UsLicenseRecognizer, context=US_DRIVER_LICENSE_CONTEXT),
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
    "IN_PAN": _en(pr.InPanRecognizer, patterns=_IN_PAN_PATTERNS),
    "IN_AADHAAR": _en(pr.InAadhaarRecognizer),
    "IN_VEHICLE_REGISTRATION": _strict(pr.InVehicleRegistrationRecognizer),
    "IN_VOTER": _en(pr.InVoterRecognizer),
    "IN_PASSPORT": _en(pr.InPassportRecognizer),
    "FI_PERSONAL_IDENTITY_CODE": _en(pr.FiPersonalIdentityCodeRecognizer),
}

#: What runs when ``pii_entities`` is not set: every offline category but the noisy ones.
DEFAULT_CATEGORIES: Final = frozenset(PATTERN_RECOGNIZERS) - OFF_BY_DEFAULT


def _lemma(token_lower: str) -> str:
    """A crude English lemma (plural dropped) so "cards" meets the context word "card"
    and "taxes" meets "tax": without a model there is no lemmatizer, and Presidio's
    enhancer compares lemmas."""
    if len(token_lower) > 4 and token_lower.endswith(("sses", "xes", "zes", "ches", "shes")):
        return token_lower[:-2]
    if len(token_lower) > 3 and token_lower.endswith("s") and not token_lower.endswith(("ss", "us", "is")):
        return token_lower[:-1]
    return token_lower


@dataclass(frozen=True)
class NerEntity:
    """The three attributes Presidio's SpacyRecognizer reads from an entity span.

    Copied out of the spaCy Doc because the Doc does not outlive its memory zone.
    """

    label_: str
    start_char: int
    end_char: int


class OfflineNlpEngine(NlpEngine):
    """Presidio NLP engine that never loads or downloads anything.

    Without an NER model (the default) it only has to give Presidio's context
    enhancer words and their offsets, so it tokenises with a regular expression:
    spaCy's blank English tokenizer is about 6x slower on a 5,000-token prompt and
    its string store grows with every new token a long-running proxy sees.

    With a spaCy NER pipeline, each text is processed inside
    ``Language.memory_zone()`` (the string store does not grow) and under a lock
    (spaCy pipelines are not documented as thread-safe); entities are copied out of
    the zone as ``NerEntity`` values.

    Stop words are spaCy's English list minus the phone context words (spaCy lists
    "call"); other context words that are stop words ("us" for US_PASSPORT) stay
    filtered, as in Presidio.
    """

    engine_name = "llmwall-offline"
    is_available = True

    def __init__(self, nlp: Language | None = None, keep_words: Iterable[str] = ()) -> None:
        self._nlp = nlp
        self._stop = frozenset(w.lower() for w in STOP_WORDS) - {w.lower() for w in keep_words}
        self._stop |= {"-pron-", "be"}  # Presidio's two extra non-keywords
        self._lock = threading.Lock()

    def load(self) -> None:
        """Nothing to load: the pipeline was given at construction (no download path)."""

    def is_loaded(self) -> bool:
        return True

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Words, offsets and lemmas; entities too when an NER pipeline is set."""
        entities: list[NerEntity] = []
        if self._nlp is None:
            matches = list(_WORD.finditer(text))
            tokens = list(map(re.Match.group, matches))  # map over the methods: no Python loop
            indices = list(map(re.Match.start, matches))
            # only words ending in "s" have a plural to fold: skip the call for the rest
            lemmas = [_lemma(w) if w[-1] == "s" else w for w in map(str.lower, tokens)]
        else:
            with self._lock, self._nlp.memory_zone():
                doc = self._nlp(text)
                tokens = [t.text for t in doc]
                indices = [t.idx for t in doc]
                lemmas = [t.lemma_.lower() if t.lemma_ else _lemma(t.lower_) for t in doc]
                entities = [
                    NerEntity(_NER_LABELS[e.label_], e.start_char, e.end_char)
                    for e in doc.ents
                    if e.label_ in _NER_LABELS
                ]
        artifacts = NlpArtifacts(
            entities=entities,  # type: ignore[arg-type]  # duck-typed spans
            tokens=tokens,  # type: ignore[arg-type]  # only len() and text are read
            tokens_indices=indices,
            lemmas=lemmas,
            nlp_engine=None,  # keywords are computed below, faster
            language=language,
            scores=[NER_SCORE] * len(entities),
        )
        artifacts.nlp_engine = self
        # a per-prompt cache carried on Presidio's artifacts object, which has no slot for it
        artifacts.digit_windows = digit_windows(text, _DIGIT_MARGIN)  # type: ignore[attr-defined]
        # Presidio's keyword rule (no stop words, no punctuation, split at ":"), in one pass;
        # regex tokens are word characters only, so just "_" runs are "punctuation"
        stop = self._stop
        if self._nlp is None:
            artifacts.keywords = [w for w in lemmas if w not in stop and w.strip("_")]
        else:
            artifacts.keywords = [
                part for w in lemmas if w not in stop and any(c.isalnum() for c in w) for part in w.split(":")
            ]
        return artifacts

    def process_batch(self, texts, language, batch_size=1, n_process=1, as_tuples=False, **kwargs):
        """Not used by llmwall (one prompt at a time); kept for the interface."""
        for item in texts:
            if as_tuples:
                text, context = item
                yield text, self.process_text(text, language), context
            else:
                yield item, self.process_text(item, language)

    def is_stopword(self, word: str, language: str) -> bool:
        return word.lower() in self._stop

    def is_punct(self, word: str, language: str) -> bool:
        return bool(word) and not any(c.isalnum() for c in word)

    def get_supported_entities(self) -> list[str]:
        return sorted(NER_CATEGORIES) if self._nlp is not None else []

    def get_supported_languages(self) -> list[str]:
        return ["en"]


class FastContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's lemma context enhancement, linear in the prompt, plus phrases.

    * Presidio finds each match's token by scanning all tokens and tests keyword
      membership on a list, both per result, and deep-copies every result: quadratic
      on long prompts (0.8 s of a 5,000-token prompt).  Here: bisect, a set, and a copy
      only of results that get boosted.  The scoring rule is Presidio's.
    * Presidio compares single lemmas, so its recognizers' context phrases
      ("partita iva", "national insurance", "tax file number") never match; phrases
      of the last few words before a match are added as candidates.
    """

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        if nlp_artifacts is None:
            return raw_results
        by_id = {r.id: r for r in recognizers}
        keywords = keyword_set(nlp_artifacts)
        extra = {w.lower() for w in context or ()}
        lower = text.lower()
        possible: dict[str, bool] = {}  # recognizer id -> any of its context words in the text
        out = []
        for result in raw_results:
            meta = result.recognition_metadata or {}
            recognizer = by_id.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if (
                recognizer is None
                or not recognizer.context
                or meta.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY)
            ):
                out.append(result)
                continue
            if recognizer.id not in possible:
                ctx = [c.lower() for c in recognizer.context]
                possible[recognizer.id] = bool(extra.intersection(ctx)) or any(
                    (c in lower) if " " in c else (c in keywords) for c in ctx
                )
            if not possible[recognizer.id]:
                out.append(result)
                continue
            words = (
                set(
                    context_words(
                        nlp_artifacts, keywords, result.start, self.context_prefix_count, self.context_suffix_count
                    )
                )
                | extra
            )
            # whole-word matching, first context word in the recognizer's order (as Presidio)
            supporting = next((c for c in recognizer.context if c.lower() in words), "")
            if not supporting:
                out.append(result)
                continue
            boosted = copy.copy(result)
            boosted.analysis_explanation = copy.copy(result.analysis_explanation)
            score = max(result.score + self.context_similarity_factor, self.min_score_with_context_similarity)
            boosted.score = min(score, self.MAX_SCORE)
            boosted.analysis_explanation.set_supportive_context_word(supporting)
            boosted.analysis_explanation.set_improved_score(boosted.score)
            out.append(boosted)
        return out


def keyword_set(artifacts: NlpArtifacts) -> frozenset[str]:
    """The artifacts' keywords as a set, computed once per prompt."""
    cached = getattr(artifacts, "keyword_set", None)
    if cached is None:
        cached = frozenset(artifacts.keywords)
        artifacts.keyword_set = cached  # type: ignore[attr-defined]  # cache on the artifacts, as digit_windows
    return cached


def context_words(
    artifacts: NlpArtifacts,
    keywords: frozenset[str],
    start: int,
    prefix: int = 5,
    suffix: int = 0,
    phrase_window: int = 8,
    scan_limit: int = 64,
) -> list[str]:
    """Keyword lemmas around a match at ``start`` (Presidio's windows: ``prefix``
    keywords before, ``suffix`` after) and the phrases of the words before it."""
    # Presidio types ``tokens`` as a spaCy Doc; llmwall's NLP engine fills it with strings.
    tokens = cast("list[str]", artifacts.tokens)
    indices, lemmas = artifacts.tokens_indices, artifacts.lemmas
    if not tokens:
        return []
    # the token containing ``start``, else the first one after it (as Presidio)
    i = max(0, bisect.bisect_right(indices, start) - 1)
    if i < len(tokens) - 1 and start >= indices[i] + len(tokens[i]):
        i += 1
    words: list[str] = []
    for step, count in ((-1, prefix), (1, suffix)):
        remaining, j, scanned = count + 1, i, 0  # +1: the match's own token counts
        while 0 <= j < len(lemmas) and remaining > 0 and scanned < scan_limit:
            if lemmas[j] in keywords:
                words.append(lemmas[j])
                remaining -= 1
            j += step
            scanned += 1
    before = [t.lower() for t in tokens[max(0, i - phrase_window) : i] if any(c.isalnum() for c in t)]
    for n in range(2, 6):
        words.extend(" ".join(before[k : k + n]) for k in range(len(before) - n + 1))
    return words


def _load_spacy(spacy_model: str | None) -> Language | None:
    """An installed spaCy NER pipeline, or None; never a download."""
    if spacy_model is None:
        return None
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
        raise ValueError(f"unknown PII categories {sorted(unknown)}; known: {', '.join(CLOUDFLARE_CATEGORIES)}")
    available = set(PATTERN_RECOGNIZERS) | (NER_CATEGORIES if spacy_model else set())
    return frozenset(wanted & available), frozenset(wanted - available)


@functools.cache
def _engine(categories: frozenset[str], spacy_model: str | None, phone_needs_context: bool) -> AnalyzerEngine:
    """One AnalyzerEngine per configuration per process (loading costs ~1 s)."""
    recognizers = [
        WindowedPhoneRecognizer(phone_needs_context) if c == "PHONE_NUMBER" else PATTERN_RECOGNIZERS[c]()
        for c in sorted(categories & set(PATTERN_RECOGNIZERS))
    ]
    if categories & NER_CATEGORIES:
        recognizers.append(
            pr.SpacyRecognizer(supported_language="en", supported_entities=sorted(categories & NER_CATEGORIES))
        )
    engine = AnalyzerEngine(
        registry=RecognizerRegistry(recognizers=recognizers, supported_languages=["en"]),
        nlp_engine=OfflineNlpEngine(_load_spacy(spacy_model), keep_words=PHONE_CONTEXT),
        supported_languages=["en"],
        context_aware_enhancer=FastContextEnhancer(
            min_score_with_context_similarity=CONTEXT_CONFIRMED_SCORE,
            context_matching_mode="whole_word",
        ),
    )
    # Presidio loads recognizers and compiles regexes, and libphonenumber loads each
    # region's metadata, lazily on first use: do it now, single-threaded, so the first
    # request does not stall and concurrent detect() calls only read shared state.
    engine.analyze(_WARM_UP, language="en")
    return engine


_WARM_UP: Final = (
    "call phone 212-736-5000 or +44 20 7946 0958, mail a@example.com, card 4111 1111 1111 1111, "
    "iban DE89 3704 0044 0532 0130 00, ip 192.168.0.1, ssn 536-90-4399, date 2024-03-15"
)


_DIGIT_RUN: Final = regex.compile(r"\d+")  # the regex module's classes: what Presidio's patterns use
_WORD_RUN: Final = regex.compile(r"\w+")


class _Piece:
    r"""A piece of a text that a pattern recognizer scans (a digit window, the words
    around an "@", or the whole text), with what the pattern gates read: its longest
    runs of ``\d`` and (on demand) ``\w``."""

    __slots__ = ("_longest_word", "lo", "longest_digits", "text")

    def __init__(self, lo: int, text: str) -> None:
        self.lo = lo
        self.text = text
        self.longest_digits: int = max(map(len, _DIGIT_RUN.findall(text)), default=0)
        self._longest_word: int | None = None

    @property
    def longest_word(self) -> int:
        if self._longest_word is None:
            self._longest_word = max(map(len, _WORD_RUN.findall(self.text)), default=0)
        return self._longest_word


class _PatternScan:
    r"""``PatternRecognizer.analyze`` of one recognizer, result for result, without
    Presidio's per-pattern bookkeeping (two clock reads and a debug log call per
    pattern and piece) and without running a pattern on a piece that provably holds
    no match of it (``pattern_needs``): one whose longest digit run, longest word run
    or punctuation falls short of what every match holds (``\b\d{9}\b`` on a piece
    whose longest digit run is 4, an IPv6 pattern on a piece without ":").

    ``windows`` names the pieces the recognizer's own ``analyze`` would scan:
    ``"digits"`` (``DigitWindowed``), ``"at"`` (``OfflineEmailRecognizer``) or
    ``"whole"``; each piece's matches are de-duplicated on their own, as there.
    """

    def __init__(self, recognizer: PatternRecognizer, windows: str) -> None:
        self.recognizer = recognizer
        self.windows = windows
        self.entity: str = recognizer.supported_entities[0]
        self.name: str = recognizer.name  # type: ignore[has-type]  # Presidio sets it untyped in __init__
        self.flags = cast("int", recognizer.global_regex_flags)
        source: list[Pattern] = recognizer.patterns  # type: ignore[has-type]  # as ``name``
        self.patterns = [
            (p, regex.compile(p.regex, flags=self.flags), pattern_needs.needs(p.regex, self.flags)) for p in source
        ]

    def analyze(self, pieces: list[_Piece]) -> list[RecognizerResult]:
        out: list[RecognizerResult] = []
        for piece in pieces:
            found = self._matches(piece)
            if not found:
                continue
            for result in EntityRecognizer.remove_duplicates(found):
                result.start += piece.lo
                result.end += piece.lo
                out.append(result)
        return out

    def _matches(self, piece: _Piece) -> list[RecognizerResult]:
        """Presidio's scoring of each match: the pattern's score, 1.0 or dropped by the
        validator, dropped by the invalidator; an explanation as Presidio writes it."""
        rec, flags, text = self.recognizer, self.flags, piece.text
        results: list[RecognizerResult] = []
        for pattern, compiled, needs in self.patterns:
            if needs.digit_run > piece.longest_digits or (needs.word_run and needs.word_run > piece.longest_word):
                continue
            if needs.chars and not all(c in text for c in needs.chars):
                continue
            try:
                for match in compiled.finditer(text, timeout=REGEX_TIMEOUT_SECONDS):
                    start, end = match.span()
                    if start == end:
                        continue
                    value = text[start:end]
                    validation = rec.validate_result(value)
                    explanation = rec.build_regex_explanation(
                        self.name,
                        pattern.name,
                        pattern.regex,
                        pattern.score,
                        validation,  # type: ignore[arg-type]  # None as Presidio passes it: not validated
                        flags,
                    )
                    result = RecognizerResult(
                        entity_type=self.entity,
                        start=start,
                        end=end,
                        score=pattern.score,
                        analysis_explanation=explanation,
                        recognition_metadata={
                            RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: rec.id,
                        },
                    )
                    if validation is not None:
                        result.score = EntityRecognizer.MAX_SCORE if validation else EntityRecognizer.MIN_SCORE
                    if rec.invalidate_result(value):
                        result.score = EntityRecognizer.MIN_SCORE
                    if result.score > EntityRecognizer.MIN_SCORE:
                        results.append(result)
                    explanation.score = result.score
            except TimeoutError:  # Presidio's regex time limit: the pattern is skipped, as there
                log.warning("PII pattern %r timed out after %s s; skipped", pattern.name, REGEX_TIMEOUT_SECONDS)
        return results


def _pattern_scan(recognizer: EntityRecognizer) -> _PatternScan | None:
    """A fast scan for a recognizer whose analysis is Presidio's pattern loop (behind
    llmwall's window wrappers); None for the others (IBAN's own loop, phone numbers,
    NER), which run as they are."""
    if not isinstance(recognizer, PatternRecognizer):
        return None
    wrapper: type | None = None
    windows = "whole"
    if isinstance(recognizer, DigitWindowed):
        wrapper, windows = DigitWindowed, "digits"
    elif isinstance(recognizer, OfflineEmailRecognizer):
        wrapper, windows = OfflineEmailRecognizer, "at"
    mro = type(recognizer).__mro__
    analyzers = [k for k in mro if "analyze" in vars(k)]
    expected = [wrapper, PatternRecognizer] if wrapper else [PatternRecognizer]
    if analyzers[: len(expected)] != expected:
        return None
    return _PatternScan(recognizer, windows)


def _with_recognizer_id(results: list[RecognizerResult], recognizer: EntityRecognizer) -> None:
    """Tag results with their recognizer, as the engine does before context enhancement."""
    name: str = recognizer.name  # type: ignore[has-type]  # Presidio sets it untyped in __init__
    for result in results:
        if not result.recognition_metadata:
            result.recognition_metadata = {}
        result.recognition_metadata.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, recognizer.id)
        result.recognition_metadata.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, name)


class FastAnalyzer:
    """``AnalyzerEngine.analyze(text, "en", entities, score_threshold=...,
    return_decision_process=True)`` for one fixed engine and entity list, with the same
    results, without the work Presidio repeats on every call.

    Per call Presidio re-selects the recognizers (a set built from every entity, then a
    list), re-checks that each is loaded, runs each pattern with two clock reads and a
    debug log call, and before the context enhancer splits the results by recognizer
    twice per recognizer (quadratic in results x recognizers) to hand each recognizer
    its own results, which every recognizer used here returns unchanged
    (``EntityRecognizer.enhance_using_context``).  Here the recognizer list is selected
    once (the same list, in the same order, as every call would get: the registry's
    set is built in the same order from the same objects), pattern recognizers run
    through ``_PatternScan``, and the enhancer gets the results in the order Presidio
    gives them.  Digit windows, "@" windows and their longest digit runs are computed
    once per text and shared by all recognizers; the NLP artifacts only when read.

    ``tests/test_pii_fast.py`` compares both paths on a large varied corpus.
    """

    def __init__(self, engine: AnalyzerEngine, entities: list[str]) -> None:
        self.engine = engine
        self.entities = list(entities)
        self.recognizers: list[EntityRecognizer] = engine.registry.get_recognizers(
            language="en", entities=self.entities, all_fields=not self.entities
        )
        for recognizer in self.recognizers:
            if not recognizer.is_loaded:
                recognizer.load()
                recognizer.is_loaded = True
        if not isinstance(engine.nlp_engine, OfflineNlpEngine):
            raise TypeError("FastAnalyzer reads the digit windows OfflineNlpEngine computes")
        self._plan = [(r, _pattern_scan(r)) for r in self.recognizers]
        self._order = {r.id: i for i, r in enumerate(self.recognizers)}
        # Presidio asks each recognizer to enhance its own results first; the base class
        # returns them unchanged.  Should a recognizer ever override it, do as Presidio.
        self._recognizers_enhance = any(
            type(r).enhance_using_context is not EntityRecognizer.enhance_using_context for r in self.recognizers
        )

    def analyze(self, text: str, score_threshold: float) -> list[RecognizerResult]:
        """Presidio's results for ``text``, de-duplicated, decision process kept.

        The NLP artifacts (words, lemmas, keywords) are made only when something reads
        them: a recognizer with its own ``analyze`` that can find anything here, or the
        context enhancer when there are results.  Prose without digits needs neither.
        """
        engine = self.engine
        made: list[NlpArtifacts] = []

        def artifacts() -> NlpArtifacts:
            if not made:
                made.append(engine.nlp_engine.process_text(text, "en"))
            return made[0]

        # what OfflineNlpEngine puts on the artifacts, computed here without tokenizing
        digit_spans = digit_windows(text, _DIGIT_MARGIN)
        pieces: dict[str, list[_Piece]] = {}
        results: list[RecognizerResult] = []
        for recognizer, scan in self._plan:
            if scan is None:
                if not _may_find(recognizer, text, digit_spans):
                    continue
                found = recognizer.analyze(text=text, entities=self.entities, nlp_artifacts=artifacts())
                if found:
                    _with_recognizer_id(found, recognizer)
                    results.extend(found)
                continue
            if scan.windows not in pieces:
                pieces[scan.windows] = self._pieces(scan.windows, text, digit_spans)
            results.extend(scan.analyze(pieces[scan.windows]))
        if not results:
            return []  # what the enhancer, the score filter and de-duplication make of none
        if self._recognizers_enhance:
            results = engine._enhance_using_context(text, results, artifacts(), self.recognizers, None)
        else:
            order = self._order
            key = RecognizerResult.RECOGNIZER_IDENTIFIER_KEY
            # Presidio regroups the results by recognizer (dropping any of an unknown one)
            results = sorted(
                (r for r in results if r.recognition_metadata[key] in order),
                key=lambda r: order[r.recognition_metadata[key]],
            )
            results = engine.context_aware_enhancer.enhance_using_context(
                text=text, raw_results=results, nlp_artifacts=artifacts(), recognizers=self.recognizers, context=None
            )
        return EntityRecognizer.remove_duplicates([r for r in results if r.score >= score_threshold])

    @staticmethod
    def _pieces(windows: str, text: str, digit_spans: list[tuple[int, int]]) -> list[_Piece]:
        """The pieces a recognizer of this window kind scans, as its ``analyze`` would."""
        spans = [(0, len(text))]
        if windows == "digits":
            spans = digit_spans
        elif windows == "at":
            spans = _at_windows(text)
        return [_Piece(lo, text[lo:hi]) for lo, hi in spans]


def _may_find(recognizer: EntityRecognizer, text: str, digit_spans: list[tuple[int, int]]) -> bool:
    """False where a recognizer with its own ``analyze`` provably returns nothing: the
    phone recognizer without a phone-number candidate (it looks only around them), a
    digit-windowed one (IBAN) without digit windows."""
    if isinstance(recognizer, WindowedPhoneRecognizer):
        return _PHONE_CANDIDATE.search(text) is not None
    if isinstance(recognizer, DigitWindowed):
        return bool(digit_spans)
    return True


@functools.cache
def _fast_analyzer(categories: frozenset[str], spacy_model: str | None, phone_needs_context: bool) -> FastAnalyzer:
    """The fast path over the same (shared) engine; built once per configuration."""
    return FastAnalyzer(_engine(categories, spacy_model, phone_needs_context), sorted(categories))


_ENGINE_LOCK: Final = threading.Lock()


class PiiDetector(Detector):
    """Fills ``cf.llm.prompt.pii_detected`` / ``pii_categories`` and returns PII spans."""

    name = "pii"
    lane = PYTHON_LANE
    provides = fields.PII_FIELDS

    def __init__(
        self,
        entities: Sequence[str] | None = None,
        min_score: float = 0.5,
        spacy_model: str | None = None,
        extra_entities: Iterable[str] = (),
        stock_engine: bool = False,
    ) -> None:
        """``stock_engine`` runs Presidio's ``AnalyzerEngine.analyze`` itself instead of
        ``FastAnalyzer`` (same results, more CPU): the reference for tests and benchmarks."""
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"pii_min_score must be within [0, 1], got {min_score}")
        self.categories, self.unavailable = resolve_categories(entities, spacy_model, extra_entities)
        self.min_score = min_score
        self.spacy_model = spacy_model
        phone_needs_context = min_score > pr.PhoneRecognizer.SCORE
        with _ENGINE_LOCK:  # functools.cache may otherwise build the same engine twice
            self._engine = _engine(self.categories, spacy_model, phone_needs_context)
            self._fast = None if stock_engine else _fast_analyzer(self.categories, spacy_model, phone_needs_context)
        self._entities = sorted(self.categories)
        if self.unavailable:
            log.warning(
                "PII categories %s need a spaCy NER model (spacy_model option); not detected",
                ", ".join(sorted(self.unavailable)),
            )

    def detect(self, request: ScreenRequest) -> Detection:
        """Analyze the prompt text in chunks, giving up when the deadline passes.

        Categories are sorted; spans are in ``request.prompt.text`` offsets.  Raises
        ``NotScored`` rather than keep a worker
        thread busy past the deadline on a huge prompt.
        """
        text = request.prompt.text
        results: list[RecognizerResult] = []
        for lo, hi, own_lo, own_hi in chunks(text) if text.strip() and self._entities else ():
            if time.monotonic() >= request.deadline:
                raise NotScored("pii: deadline passed")
            for r in self._analyze(text[lo:hi]):
                r.start += lo
                r.end += lo
                if own_lo <= r.start < own_hi:
                    results.append(r)
        spans = _clean([_trimmed(r, text) for r in results if _accepted(r, text)])
        categories = sorted({s.category for s in spans})
        return Detection(
            fields={PII_DETECTED: bool(categories), PII_CATEGORIES: categories},
            spans=spans,
        )

    def _analyze(self, text: str) -> list[RecognizerResult]:
        """Presidio's results for one chunk, with the decision process (``_accepted``
        reads which context word confirmed a match)."""
        if self._fast is not None:
            return self._fast.analyze(text, self.min_score)
        return self._engine.analyze(
            text,
            language="en",
            entities=self._entities,
            score_threshold=self.min_score,
            return_decision_process=True,
        )

    def describe(self) -> str:
        """Coverage for the start-up log."""
        ner = self.spacy_model or "none (pattern recognizers only)"
        return (
            f"pii: presidio, offline, NER model {ner}, min score {self.min_score}, "
            f"{len(self.categories)} categories: {', '.join(sorted(self.categories))}"
        )


#: Characters analysed per call, and shared by neighbouring chunks.  Each chunk owns
#: the matches that start in its middle part; half the overlap (256 characters) on each
#: side gives an owned match its context words before it and its full length after.
CHUNK_CHARS: Final = 8192
CHUNK_OVERLAP: Final = 512


def chunks(text: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[tuple[int, int, int, int]]:
    """(start, end, owned start, owned end) of the chunks covering ``text``; the owned
    ranges partition the text, so every match is kept exactly once."""
    n, half = len(text), overlap // 2
    out: list[tuple[int, int, int, int]] = []
    lo = own_lo = 0
    while lo + size < n:
        hi = lo + size
        out.append((lo, hi, own_lo, hi - half))
        lo, own_lo = hi - overlap, hi - half
    out.append((lo, n, own_lo, n))
    return out


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
        # "1.3.6.1" of the OID 1.3.6.1.4.1.1466, "1.4.0.0" of version 1.4.0.0.0
        return not _DOTTED_TAIL.match(text, result.end) and _identifies_a_host(value)
    return True


def _identifies_a_host(value: str) -> bool:
    """Unspecified and loopback addresses or networks (0.0.0.0, 127.0.0.0/8, ::1) identify
    nobody, and "1::2" or "a::b" with four hex digits in all is a Python slice or a
    placeholder, not a host."""
    value = value.strip("[]")
    if ":" in value and sum(c in "0123456789abcdefABCDEF" for c in value.split("%")[0]) <= 4:
        return False
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return True  # Presidio's forms we cannot parse here (embedded, mapped, zoned): keep
    return not (net.is_unspecified or net.is_loopback)


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
        if s.end > s.start and not (s.category == "URL" and any(e.start <= s.start and s.end <= e.end for e in emails))
    ]
    return sorted(set(kept), key=lambda s: (s.start, s.end, s.category))


def create(config: DetectorConfig) -> PiiDetector:
    """Build the detector from the addon options; the engine is shared per process.

    A ``spacy_model`` that is not installed is logged as an error and the detector
    runs without NER (PERSON, LOCATION, NRP unavailable): an optional model must not
    take the offline pattern categories down with it.  Unknown category names and a
    bad minimum score still raise ``ValueError``.
    """
    model = config.spacy_model
    if model is not None and not (spacy.util.is_package(model) or Path(model).exists()):
        log.error("spaCy model %r is not installed (never downloaded); PII runs without NER", model)
        model = None
    return PiiDetector(entities=config.pii_entities, min_score=config.pii_min_score, spacy_model=model)


__all__ = [
    "CLOUDFLARE_CATEGORIES",
    "DEFAULT_CATEGORIES",
    "NER_CATEGORIES",
    "OFF_BY_DEFAULT",
    "PATTERN_RECOGNIZERS",
    "PiiDetector",
    "chunks",
    "create",
    "resolve_categories",
]
