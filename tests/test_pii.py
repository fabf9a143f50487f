"""PiiDetector: every offline Cloudflare category on realistic prompts, look-alikes, offline proof."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwall.detectors import pii
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.detectors.pii import PiiDetector

ROOT = Path(__file__).resolve().parent.parent
EVERY_OFFLINE = tuple(c for c in pii.CLOUDFLARE_CATEGORIES if c not in pii.NER_CATEGORIES)


def _request(*texts: str) -> ScreenRequest:
    parts = tuple(TextPart(path=("messages", i, "content"), text=t) for i, t in enumerate(texts))
    return ScreenRequest(prompt=Prompt(format="openai.chat", parts=parts), deadline=time.monotonic() + 30)


def _found(detector: PiiDetector, text: str) -> dict[str, set[str]]:
    """category -> set of matched substrings."""
    det = detector.detect(_request(text))
    out: dict[str, set[str]] = {}
    for s in det.spans:
        out.setdefault(s.category, set()).add(text[s.start : s.end])
    assert det.fields["cf.llm.prompt.pii_categories"] == sorted(out)
    assert det.fields["cf.llm.prompt.pii_detected"] is bool(out)
    return out


@pytest.fixture(scope="module")
def every() -> PiiDetector:
    """All offline categories, DATE_TIME and URL included."""
    return PiiDetector(entities=EVERY_OFFLINE)


@pytest.fixture(scope="module")
def default() -> PiiDetector:
    return pii.create(DetectorConfig())


# (category, prompt, the value that must be found, a look-alike prompt that must not
# yield the category). Checksummed values are valid; look-alikes break the checksum,
# drop the context word a weak pattern needs, or are a different kind of identifier.
CASES = [
    (
        "CREDIT_CARD",
        "Please charge my Visa 4111 1111 1111 1111 for the renewal.",
        "4111 1111 1111 1111",
        "The test card number 4111 1111 1111 1112 should fail Luhn; order #112-3456789-1234567 too.",
    ),
    (
        "CREDIT_CARD",
        "Amex on file: 3782 822463 10005, expiry 04/27.",
        "3782 822463 10005",
        "Random id 1234567812345678 and card 5500 0000 0000 0005 are not cards.",
    ),
    (
        "CRYPTO",
        "Send the refund to my bitcoin wallet 1BoatSLRHtKNngkdXEeobR76b53LETtpyT please.",
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT",
        "My bitcoin wallet is 1BoatSLRHtKNngkdXEeobR76b53LETtpyX (typo).",
    ),
    (
        "DATE_TIME",
        "My date of birth is 15/03/1984, fill in the form.",
        "15/03/1984",
        "Bump the package to 4.2.0 and rerun job 7731.",
    ),
    (
        "EMAIL_ADDRESS",
        "Can you draft a reply to jane.doe@example.com about the invoice?",
        "jane.doe@example.com",
        "Use the @property decorator; the service account is admin@build-server.internal.",
    ),
    (
        "IBAN_CODE",
        "Wire it to IBAN GB82 WEST 1234 5698 7654 32 by Friday.",
        "GB82 WEST 1234 5698 7654 32",
        "Wire it to IBAN GB82 WEST 1234 5698 7654 33 by Friday.",
    ),
    (
        "IP_ADDRESS",
        "ssh root@203.0.113.7 keeps dropping the session.",
        "203.0.113.7",
        "Pin pkg==1.2.3.4 and release 10.2.0.1 in the lockfile.",
    ),
    (
        "IP_ADDRESS",
        "Our server at 192.168.1.23 keeps dropping SSH sessions.",
        "192.168.1.23",
        "Upgrade from version 1.2.3.4; the dev server listens on 0.0.0.0:8080 and 127.0.0.1.",
    ),
    (
        "IP_ADDRESS",
        "Block 2001:db8:85a3::8a2e:370:7334 on the firewall.",
        "2001:db8:85a3::8a2e:370:7334",
        "Use std::vector<int> and call v.size() at 10:30:45.",
    ),
    (
        "PHONE_NUMBER",
        "Please call me on +44 20 7946 0958 tomorrow.",
        "+44 20 7946 0958",
        "Your order number is 4155552671, track it online.",
    ),
    (
        "PHONE_NUMBER",
        "My mobile: (212) 736-5000, text first.",
        "(212) 736-5000",
        "Mobile app build 20240315 passed 1,234,567 tests.",
    ),
    (
        "MEDICAL_LICENSE",
        "Dr. Smith's DEA number is AB1234563 for the prescription.",
        "AB1234563",
        "Part number AB1234563 is back-ordered.",
    ),
    (
        "URL",
        "Summarize the article at https://www.example.com/news/today for me.",
        "https://www.example.com/news/today",
        "Parse data.json and write the summary to report.txt.",
    ),
    (
        "US_BANK_NUMBER",
        "My bank account 123456789012 was charged twice.",
        "123456789012",
        "Ticket 123456789012 was reopened by the on-call engineer.",
    ),
    (
        "US_DRIVER_LICENSE",
        "My driver license D1234567 was suspended, write an appeal.",
        "D1234567",
        "Issue D1234567 in the tracker is a duplicate.",
    ),
    ("US_ITIN", "My ITIN is 912-70-1234 and I need to file taxes.", "912-70-1234", "The log shows 912701234 retries."),
    ("US_PASSPORT", "My passport number is 912803456, renew it.", "912803456", "Ticket 912803456 was closed."),
    (
        "US_SSN",
        "My SSN is 536-90-4399, fill in the form.",
        "536-90-4399",
        "My SSN is 000-12-3456 according to the broken form.",
    ),
    (
        "UK_NHS",
        "My NHS number is 943 476 5919, book a GP appointment.",
        "943 476 5919",
        "Invoice 943 476 5919 is overdue; my NHS number is 943 476 5918.",
    ),
    (
        "UK_NINO",
        "My national insurance number (NINO) is AB 12 34 56 C.",
        "AB 12 34 56 C",
        "NINO DA 12 34 56 C is not a valid prefix.",
    ),
    (
        "ES_NIF",
        "Mi DNI es 12345678Z, rellena el formulario.",
        "12345678Z",
        "Mi DNI es 12345678A, rellena el formulario.",
    ),
    ("ES_NIE", "Mi NIE es X1234567L para el contrato.", "X1234567L", "Mi NIE es X1234567A para el contrato."),
    (
        "IT_FISCAL_CODE",
        "Il mio codice fiscale è RSSMRA85T10A562S.",
        "RSSMRA85T10A562S",
        "Il mio codice fiscale è RSSMRA85T10A562X.",
    ),
    (
        "IT_DRIVER_LICENSE",
        "La mia patente di guida AB1234567C è scaduta.",
        "AB1234567C",
        "The SKU AB1234567C is out of stock.",
    ),
    (
        "IT_VAT_CODE",
        "La partita iva è 07643520567 per la fattura.",
        "07643520567",
        "Serial 07643520567 printed on the box; partita iva 07643520568.",
    ),
    ("IT_PASSPORT", "Il mio passaporto YA1234567 scade a maggio.", "YA1234567", "Order YA1234567 shipped."),
    (
        "IT_IDENTITY_CARD",
        "La carta d'identità CA00000AA è stata rubata.",
        "CA00000AA",
        "Config key CA00000AA is deprecated.",
    ),
    ("PL_PESEL", "My PESEL is 44051401359.", "44051401359", "My PESEL is 44051401358; call 13812345678."),
    ("SG_NRIC_FIN", "My NRIC is S1234567D, update my record.", "S1234567D", "My NRIC is S123456D, short."),
    (
        "SG_UEN",
        "Our UEN is 53312345C for the ACRA filing.",
        "53312345C",
        "Our UEN is 53312345D for the ACRA filing. "
        "Separately, the nightly pipeline reported that build 53312345C passed.",
    ),
    (
        "AU_ABN",
        "Our ABN is 51 824 753 556 for the invoice.",
        "51 824 753 556",
        "Our ABN is 51 824 753 557; tracking 51824753556.",
    ),
    ("AU_ACN", "The company ACN is 004 085 616.", "004 085 616", "The company ACN is 004 085 617."),
    (
        "AU_TFN",
        "My TFN is 123 456 782, help with my tax return.",
        "123 456 782",
        "My TFN is 123 456 789. Separately, the warehouse says order 123456782 shipped.",
    ),
    (
        "AU_MEDICARE",
        "My Medicare card number is 2123 45670 1.",
        "2123 45670 1",
        "My Medicare card number is 2123 45679 1; invoice 2123456701.",
    ),
    ("IN_PAN", "My PAN is AAAPZ1234C for the form.", "AAAPZ1234C", "My PAN is AAAPZ12345 for the form."),
    (
        "IN_AADHAAR",
        "My Aadhaar number is 2345 6789 0124.",
        "2345 6789 0124",
        "My Aadhaar number is 2345 6789 0125; request 2345 6789 0124.",
    ),
    (
        "IN_VEHICLE_REGISTRATION",
        "Vehicle registration MH12AB1234 was fined.",
        "MH12AB1234",
        "Vehicle registration ZZ12AB1234 was fined.",
    ),
    ("IN_VOTER", "My voter ID (EPIC) is ABC1234567.", "ABC1234567", "Jira key ABC1234567 was moved."),
    ("IN_PASSPORT", "My Indian passport number is A1234567.", "A1234567", "SKU A1234567 is sold out."),
    (
        "FI_PERSONAL_IDENTITY_CODE",
        "Henkilötunnus 131052-308T for the form.",
        "131052-308T",
        "Henkilötunnus 131052-308U for the form.",
    ),
]


@pytest.mark.parametrize(("category", "prompt", "value", "lookalike"), CASES, ids=[c[0] for c in CASES])
def test_category_found_and_lookalike_not(every, category, prompt, value, lookalike) -> None:
    assert value in _found(every, prompt).get(category, set())
    assert category not in _found(every, lookalike)


def test_every_offline_category_has_a_case() -> None:
    assert {c[0] for c in CASES} == set(pii.PATTERN_RECOGNIZERS) == set(EVERY_OFFLINE)


# Developer and support traffic that must not be reported at all with the defaults.
CLEAN = [
    "Where is my order #112-3456789-1234567? It shipped yesterday.",
    "Order ID 20240315-000123 was refunded; invoice 9876543210 is overdue.",
    "Pin requests==2.31.0, run node v18.17.1 on build 10.0.19045.3803.",
    "const ts = 1717171717; const createdAt = 1717171717123; time.sleep(86400)",
    "log: 2024-03-15T10:30:00Z INFO worker started at 10:30:45 pid 48213",
    "The request id is 123e4567-e89b-12d3-a456-426614174000, trace 550e8400-e29b-41d4-a716-446655440000.",
    "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 broke the build",
    "SELECT * FROM users WHERE id = 123456789 AND org_id = 987654321;",
    "Colour #ff5733, rgba(255, 87, 51, 0.5), pi is 3.14159265358979.",
    "Card ids 4111111111111112, 1234567812345678 and 9999999999999999 fail Luhn.",
    "Compute 13812345678 modulo 97 and print the result.",
    "Please send us the logs for ticket 912803456 today.",
    "Apache License 2.0 covers the library; see the NOTICE file.",
    "limitations under the License.\n\ndata = {'861787688': 'x', 'A12345': 'y'}",
    "attributeTypes: ( 1.3.6.1.4.1.1466.115.121.1.15 NAME 'cn' ) per RFC 7540 § 8.1.2.2",
    ">>> canonicalize_version('1.4.0.0.0')",
    "See rfc7540#section-8.1.2.5; allow 127.0.0.0/8 and ::1/128; w[1::2] = 1",
    'Connect to "ssh://687fb701029421ae5549d998@ssh.hf.jobs" or http://userid:secret@example.com:8080/',
]


@pytest.mark.parametrize("text", CLEAN)
def test_developer_lookalikes_are_clean_by_default(default, text) -> None:
    assert _found(default, text) == {}


def test_defaults_leave_out_date_time_and_url(default) -> None:
    assert "DATE_TIME" not in default.categories and "URL" not in default.categories
    assert default.categories == pii.DEFAULT_CATEGORIES
    found = _found(default, "On 15/03/1984 I visited https://www.example.com and mailed a@example.com")
    assert set(found) == {"EMAIL_ADDRESS"}
    extra = PiiDetector(extra_entities=["URL"])
    assert "URL" in _found(extra, "Visit https://www.example.com/a today")


def test_email_parts_are_not_reported_as_urls(every) -> None:
    assert _found(every, "Reply to jane.doe@example.com now") == {"EMAIL_ADDRESS": {"jane.doe@example.com"}}


def test_spans_are_in_prompt_text_coordinates_across_parts(default) -> None:
    req = _request("You are a helpful assistant.", "Email me at bob@example.org or call +1 212-736-5000")
    det = default.detect(req)
    text = req.prompt.text
    assert {(s.category, text[s.start : s.end]) for s in det.spans} == {
        ("EMAIL_ADDRESS", "bob@example.org"),
        ("PHONE_NUMBER", "+1 212-736-5000"),
    }


def test_min_score_and_entity_selection() -> None:
    strict = PiiDetector(entities=["US_PASSPORT", "CREDIT_CARD"], min_score=0.9)
    found = _found(strict, "My passport number is 912803456; Visa 4111 1111 1111 1111")
    assert found == {"CREDIT_CARD": {"4111 1111 1111 1111"}}  # context-confirmed 0.5 < 0.9
    only_email = pii.create(DetectorConfig(pii_entities=("EMAIL_ADDRESS",)))
    assert set(_found(only_email, "a@example.com, SSN 536-90-4399")) == {"EMAIL_ADDRESS"}


def test_bad_configuration_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown PII categories"):
        PiiDetector(entities=["EMAIL"])
    with pytest.raises(ValueError, match="pii_min_score"):
        PiiDetector(min_score=1.5)
    with pytest.raises(ValueError, match="never downloads"):
        PiiDetector(spacy_model="en_core_web_lg_not_installed")


def test_missing_model_in_config_degrades_to_pattern_categories(caplog) -> None:
    det = pii.create(DetectorConfig(spacy_model="en_core_web_lg_not_installed", pii_entities=("PERSON", "US_SSN")))
    assert det.categories == {"US_SSN"} and det.unavailable == {"PERSON"}
    assert "not installed" in caplog.text
    assert set(_found(det, "Jane Doe, SSN 536-90-4399")) == {"US_SSN"}


def test_ner_categories_without_a_model_are_reported_unavailable(caplog) -> None:
    det = PiiDetector(entities=["PERSON", "EMAIL_ADDRESS"])
    assert det.categories == {"EMAIL_ADDRESS"} and det.unavailable == {"PERSON"}
    assert "need a spaCy NER model" in caplog.text
    assert _found(det, "Jane Doe wrote to a@example.com") == {"EMAIL_ADDRESS": {"a@example.com"}}


def test_ner_model_adds_person_location_nrp(tmp_path) -> None:
    """A real spaCy pipeline on disk (entity ruler standing in for a statistical NER)."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": "Jane Doe"},
            {"label": "GPE", "pattern": "Berlin"},
            {"label": "NORP", "pattern": "Germans"},
            {"label": "ORG", "pattern": "Acme"},
        ]
    )
    nlp.to_disk(tmp_path / "ner")
    det = PiiDetector(spacy_model=str(tmp_path / "ner"))
    assert pii.NER_CATEGORIES <= det.categories and not det.unavailable
    found = _found(det, "Jane Doe from Acme moved to Berlin; the Germans welcomed her. Mail a@example.com")
    assert found == {
        "PERSON": {"Jane Doe"},
        "LOCATION": {"Berlin"},
        "NRP": {"Germans"},
        "EMAIL_ADDRESS": {"a@example.com"},
    }
    assert "ner" in det.describe()
    # the spaCy pipeline is shared: concurrent calls give the serial answer
    texts = [f"Jane Doe met {n} Germans in Berlin; mail u{n}@example.com" for n in range(24)]
    serial = [det.detect(_request(t)).spans for t in texts]
    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(lambda t: det.detect(_request(t)).spans, texts)) == serial


def test_concurrent_use_matches_serial_results(default) -> None:
    texts = [text for _, text, _, _ in CASES] + CLEAN
    serial = [default.detect(_request(t)).spans for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(lambda t: default.detect(_request(t)).spans, texts)) == serial


def test_expired_deadline_gives_up(default) -> None:
    req = ScreenRequest(prompt=_request("a@example.com").prompt, deadline=time.monotonic() - 1)
    with pytest.raises(TimeoutError):
        default.detect(req)


def test_empty_and_huge_prompts(default) -> None:
    assert _found(default, "") == {}
    assert _found(default, "   \n ") == {}
    long = ("lorem ipsum dolor sit amet 2024 build 42. " * 2000) + "mail me: z@example.com"
    assert _found(default, long) == {"EMAIL_ADDRESS": {"z@example.com"}}


def test_describe_lists_coverage(default) -> None:
    line = default.describe()
    assert "offline" in line and "EMAIL_ADDRESS" in line and "DATE_TIME" not in line


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket
    attempts = []
    def deny(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled by test")
    socket.socket.connect = deny
    socket.socket.connect_ex = deny
    socket.create_connection = deny
    socket.getaddrinfo = deny

    from llmwall.detectors.base import Prompt, ScreenRequest, TextPart
    from llmwall.detectors.pii import PiiDetector, CLOUDFLARE_CATEGORIES, NER_CATEGORIES
    det = PiiDetector(entities=[c for c in CLOUDFLARE_CATEGORIES if c not in NER_CATEGORIES])
    text = "Mail jane.doe@example.com, visit https://example.org, call +44 20 7946 0958"
    req = ScreenRequest(prompt=Prompt("openai.chat", (TextPart(("prompt",), text),)), deadline=1e18)
    cats = det.detect(req).fields["cf.llm.prompt.pii_categories"]
    during = list(attempts)
    import os
    cache = os.environ["TLDEXTRACT_CACHE"]
    written = [f for _, _, fs in os.walk(cache) for f in fs]

    # Control: tldextract's default extractor (what Presidio's e-mail recognizer uses)
    # does try the network when its cache is empty, so the guard above is effective.
    import tldextract
    tldextract.extract("www.example.co.uk")
    print(json.dumps({"categories": cats, "during": during, "written": written,
                      "control": len(attempts) - len(during)}))
    """
)


def test_no_network_is_attempted(tmp_path) -> None:
    env = dict(os.environ)
    env.update(
        HOME=str(tmp_path),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        TLDEXTRACT_CACHE=str(tmp_path / "tld"),
        PYTHONPATH=str(ROOT / "addon") + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.pop("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", None)
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["during"] == []
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "URL"} <= set(result["categories"])
    assert result["written"] == []  # no suffix-list cache either
    assert result["control"] > 0


def test_windowed_recognizers_match_whole_text_analysis(every) -> None:
    """Digit windows and "@" windows are a speed-up only: same results as scanning the
    whole text with Presidio's recognizers (the engine falls back to the whole text
    when the artifacts carry no windows)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_pii import make_prompt  # realistic, number-dense prose, code and logs

    engine = every._engine
    texts = [t for _, t, _, _ in CASES] + [t for *_, t in CASES] + CLEAN + [make_prompt(n) for n in (100, 2000)]
    texts.append("x" * 300 + " 4111 1111 1111 1111 " + "word " * 200 + "a@example.com")
    for text in texts:
        windowed = engine.nlp_engine.process_text(text, "en")
        whole = engine.nlp_engine.process_text(text, "en")
        del whole.digit_windows

        def run(artifacts, text=text):
            results = engine.analyze(text, language="en", entities=every._entities, nlp_artifacts=artifacts)
            return sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in results)

        assert run(windowed) == run(whole), text[:80]


def test_digit_windows_cover_digits_with_margin() -> None:
    text = "alpha beta " * 30 + "id 12345 end" + " gamma" * 40
    windows = pii.digit_windows(text, 16)
    assert len(windows) == 1
    lo, hi = windows[0]
    pos = text.index("12345")
    assert lo <= pos - 16 and hi >= pos + 5 + 16
    assert (lo == 0 or text[lo - 1].isspace()) and (hi == len(text) or text[hi].isspace())
    assert pii.digit_windows("no digits here", 16) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_any_text_gives_well_formed_results(default, text) -> None:
    det = default.detect(_request(text))
    cats = det.fields["cf.llm.prompt.pii_categories"]
    assert cats == sorted({s.category for s in det.spans})
    for s in det.spans:
        assert 0 <= s.start < s.end <= len(text) and s.category in pii.DEFAULT_CATEGORIES


def test_chunks_partition_the_text() -> None:
    assert pii.chunks("abc") == [(0, 3, 0, 3)]
    text = "x" * 20_000
    parts = pii.chunks(text, size=1000, overlap=100)
    assert parts[0][2] == 0 and parts[-1][3] == len(text)
    for (lo, hi, own_lo, own_hi), nxt in zip(parts, parts[1:] + [None], strict=False):
        assert lo <= own_lo - (50 if lo else 0) and own_hi + (50 if hi < len(text) else 0) <= hi
        if nxt:
            assert own_hi == nxt[2]


def _with_values_at_boundaries(pieces: list[tuple[str, str, int]]) -> tuple[str, list[tuple[int, str]]]:
    """A 4-chunk text with, at every chunk boundary, each ``(piece, value, offset)``
    written so that ``value`` starts ``offset`` characters from the boundaries
    (next chunk start, ownership boundary, chunk end); returns the text and the
    (start, value) pairs placed."""
    filler = "The quarterly review covered hiring, budgets and the office move. "
    chars = list((filler * 600)[: 4 * pii.CHUNK_CHARS])
    placed = []
    for _, hi, _, own_hi in pii.chunks("".join(chars))[:-1]:
        for boundary in (hi - pii.CHUNK_OVERLAP, own_hi, hi):
            for piece, value, offset in pieces:
                at = boundary + offset
                start = at - piece.index(value)
                chars[start : start + len(piece)] = piece
                placed.append((at, value))
    return "".join(chars), sorted(placed)


def test_long_prompt_is_analysed_in_chunks_without_losing_or_doubling(default) -> None:
    """Values that start on, or run across, every chunk start, ownership boundary and
    chunk end are found exactly once, whole, with the context word UK_NHS requires."""
    for piece, value, offset, category in [
        (" my NHS number: 943 476 5919 ok ", "943 476 5919", -4, "UK_NHS"),  # across
        (" my NHS number: 943 476 5919 ok ", "943 476 5919", 1, "UK_NHS"),  # just after
        (" mail jane@example.com ", "jane@example.com", -7, "EMAIL_ADDRESS"),  # across
        (" mail jane@example.com ", "jane@example.com", 0, "EMAIL_ADDRESS"),  # on
        # cut by a chunk end right after ".co", the head is itself a valid address
        (" mail jane@example.co.uk ", "jane@example.co.uk", -15, "EMAIL_ADDRESS"),
    ]:
        text, placed = _with_values_at_boundaries([(piece, value, offset)])
        found = [(s.start, text[s.start : s.end]) for s in default.detect(_request(text)).spans]
        assert found == placed, (value, offset)
        assert {s.category for s in default.detect(_request(text)).spans} == {category}


def test_deadline_passing_during_a_huge_prompt_gives_up(default) -> None:
    text = "Call me at +44 20 7946 0958 about invoice 9876543210. " * 40_000  # ~2 MB
    req = ScreenRequest(prompt=_request(text).prompt, deadline=time.monotonic() + 0.05)
    with pytest.raises(TimeoutError):
        default.detect(req)
