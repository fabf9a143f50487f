"""SecretsDetector: provider keys and tokens found whole; ids, hashes and blobs are not secrets.

Key material is generated at test time in each provider's format (seeded), so the
repository holds no string that looks like a live credential.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmwall.detectors import secrets
from llmwall.detectors.base import DetectorConfig, Prompt, ScreenRequest, TextPart
from llmwall.detectors.secrets import SecretsDetector

ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


def _r(alphabet: str, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def _pem(kind: str, lines: int, seed: int) -> str:
    body = "\n".join(_r(B64, 64, seed + i) for i in range(lines))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"


JWT = ".".join([_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": "1234567890", "name": "Jane"}),
                _r(URLSAFE, 43, 7)])  # fmt: skip
RSA = _pem("RSA PRIVATE KEY", 6, 100)
OPENSSH = _pem("OPENSSH PRIVATE KEY", 4, 200)

# (category, prompt, the exact secret the span must cover)
POSITIVES = [
    (
        "AWS_ACCESS_KEY",
        f"Why does boto3 fail with key AKIA{_r(string.ascii_uppercase + string.digits, 16, 1)} in us-east-1?",
        "AKIA" + _r(string.ascii_uppercase + string.digits, 16, 1),
    ),
    ("AWS_SECRET_KEY", 'aws_secret_access_key = "{}"'.format(_r(ALNUM + "/+", 40, 2)), _r(ALNUM + "/+", 40, 2)),
    (
        "GITHUB_TOKEN",
        f"git clone https://ghp_{_r(ALNUM, 36, 3)}@github.com/acme/app.git fails",
        "ghp_" + _r(ALNUM, 36, 3),
    ),
    (
        "GITHUB_TOKEN",
        f"token github_pat_{_r(ALNUM, 22, 4)}_{_r(ALNUM, 59, 5)} expired",
        f"github_pat_{_r(ALNUM, 22, 4)}_{_r(ALNUM, 59, 5)}",
    ),
    ("GITLAB_TOKEN", f"CI uses glpat-{_r(URLSAFE, 20, 6)} for the registry", "glpat-" + _r(URLSAFE, 20, 6)),
    (
        "OPENAI_API_KEY",
        f"client = OpenAI(api_key='sk-proj-{_r(ALNUM, 40, 8)}T3BlbkFJ{_r(ALNUM, 40, 9)}')",
        f"sk-proj-{_r(ALNUM, 40, 8)}T3BlbkFJ{_r(ALNUM, 40, 9)}",
    ),
    (
        "ANTHROPIC_API_KEY",
        f"My key is sk-ant-api03-{_r(URLSAFE, 93, 10)}AA, why 401?",
        f"sk-ant-api03-{_r(URLSAFE, 93, 10)}AA",
    ),
    ("GOOGLE_API_KEY", f"maps?key=AIza{_r(URLSAFE, 35, 11)}&q=paris", "AIza" + _r(URLSAFE, 35, 11)),
    (
        "SLACK_TOKEN",
        f"SLACK_BOT=xoxb-123456789012-1234567890123-{_r(LOWER_ALNUM, 24, 12)}",
        "xoxb-123456789012-1234567890123-" + _r(LOWER_ALNUM, 24, 12),
    ),
    ("STRIPE_KEY", f"stripe.api_key = 'sk_live_{_r(ALNUM, 99, 13)}'", "sk_live_" + _r(ALNUM, 99, 13)),
    (
        "SENDGRID_KEY",
        f"SG.{_r(URLSAFE, 22, 14)}.{_r(URLSAFE, 43, 15)} is our mail key",
        f"SG.{_r(URLSAFE, 22, 14)}.{_r(URLSAFE, 43, 15)}",
    ),
    (
        "TWILIO_KEY",
        "twilio key SK{} stopped working".format(_r("0123456789abcdef", 32, 16)),
        "SK" + _r("0123456789abcdef", 32, 16),
    ),
    (
        "MAILCHIMP_KEY",
        "mailchimp {}-us6 returns 403".format(_r("0123456789abcdef", 32, 17)),
        _r("0123456789abcdef", 32, 17) + "-us6",
    ),
    ("NPM_TOKEN", f"//registry.npmjs.org/:_authToken=npm_{_r(ALNUM, 36, 18)}", "npm_" + _r(ALNUM, 36, 18)),
    (
        "PYPI_TOKEN",
        f"twine upload -p pypi-AgEIcHlwaS5vcmc{_r(URLSAFE, 80, 19)}",
        "pypi-AgEIcHlwaS5vcmc" + _r(URLSAFE, 80, 19),
    ),
    ("SQUARE_OAUTH_SECRET", f"square sq0csp-{_r(URLSAFE, 43, 20)} here", "sq0csp-" + _r(URLSAFE, 43, 20)),
    (
        "DISCORD_TOKEN",
        f"bot.run('M{_r(URLSAFE, 23, 21)}.{_r(URLSAFE, 6, 22)}.{_r(URLSAFE, 27, 23)}')",
        f"M{_r(URLSAFE, 23, 21)}.{_r(URLSAFE, 6, 22)}.{_r(URLSAFE, 27, 23)}",
    ),
    ("TELEGRAM_TOKEN", f"bot token 123456789:{_r(URLSAFE, 35, 24)} invalid", "123456789:" + _r(URLSAFE, 35, 24)),
    (
        "AZURE_STORAGE_KEY",
        f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={_r(B64, 86, 25)}==;",
        "AccountKey=" + _r(B64, 86, 25) + "==",
    ),
    ("BASIC_AUTH", "DATABASE_URL=postgres://app:S3cr3tP4ss9@db.internal:5432/app", "S3cr3tP4ss9"),
    ("JWT", f"Decode this token for me: {JWT}", JWT),
    ("BEARER_TOKEN", f"curl -H 'Authorization: Bearer {_r(ALNUM, 40, 26)}' https://api.acme.dev", _r(ALNUM, 40, 26)),
    ("PRIVATE_KEY", f"Why does ssh reject this key?\n{RSA}\nThanks", RSA),
    ("PRIVATE_KEY", f"```\n{OPENSSH}\n```", OPENSSH),
    (
        "PRIVATE_KEY",
        f"pasted:\n-----BEGIN EC PRIVATE KEY-----\n{_r(B64, 64, 27)}\n{_r(B64, 20, 28)}\n\nwhat is this?",
        f"-----BEGIN EC PRIVATE KEY-----\n{_r(B64, 64, 27)}\n{_r(B64, 20, 28)}",
    ),
    (
        "PRIVATE_KEY",
        "truncated:\n-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,{}\n\n"
        "{}\n{}+x==\nWhy does it fail?".format(_r("0123456789ABCDEF", 32, 33), _r(B64, 64, 34), _r(B64, 10, 35)),
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,{}\n\n{}\n{}+x==".format(
            _r("0123456789ABCDEF", 32, 33), _r(B64, 64, 34), _r(B64, 10, 35)
        ),
    ),
    (
        "PRIVATE_KEY",
        f"one line: -----BEGIN PRIVATE KEY----- {_r(B64, 64, 36)} {_r(B64, 30, 37)} -----END PRIVATE KEY----- done",
        f"-----BEGIN PRIVATE KEY----- {_r(B64, 64, 36)} {_r(B64, 30, 37)} -----END PRIVATE KEY-----",
    ),
    ("HIGH_ENTROPY_SECRET", f'config = {{"client_secret": "{_r(ALNUM, 24, 29)}"}}', _r(ALNUM, 24, 29)),
    ("HIGH_ENTROPY_SECRET", f"WEBHOOK_SIGNING=whsec{_r(ALNUM, 40, 30)}", "whsec" + _r(ALNUM, 40, 30)),
    (
        "HIGH_ENTROPY_SECRET",
        "export API_TOKEN={}".format(_r("0123456789abcdef", 32, 31)),
        _r("0123456789abcdef", 32, 31),
    ),
    ("HIGH_ENTROPY_SECRET", f"https://hooks.acme.dev/cb?access_token={_r(ALNUM, 30, 32)}&x=1", _r(ALNUM, 30, 32)),
    ("PASSWORD", "DB_PASSWORD=hunter2!x in my .env, is that safe?", "hunter2!x"),
    ("PASSWORD", '{"user": "jane", "passwd": "Tr0ub4dor&3"}', "Tr0ub4dor&3"),
    ("PASSWORD", "SMTP_PASSWORD=supersecret", "supersecret"),
    ("PASSWORD", "database:\n  password: correcthorse", "correcthorse"),
]


def _request(text: str) -> ScreenRequest:
    prompt = Prompt(format="openai.chat", parts=(TextPart(path=("messages", 0, "content"), text=text),))
    return ScreenRequest(prompt=prompt, deadline=time.monotonic() + 30)


def _found(det: SecretsDetector, text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    result = det.detect(_request(text))
    for s in result.spans:
        out.setdefault(s.category, set()).add(text[s.start : s.end])
    assert result.fields["cf.llm.prompt.secret_categories"] == sorted(out)
    assert result.fields["cf.llm.prompt.secret_detected"] is bool(out)
    return out


@pytest.fixture(scope="module")
def det() -> SecretsDetector:
    return secrets.create(DetectorConfig())


@pytest.mark.parametrize(("category", "text", "value"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_secret_found_whole_and_only_as_its_category(det, category, text, value) -> None:
    found = _found(det, text)
    assert value in found.get(category, set()), found
    # a provider key inside key=value is reported as the provider's, not also as generic
    if category not in secrets.GENERIC_CATEGORIES:
        assert not set(found) & {"HIGH_ENTROPY_SECRET", "PASSWORD"}


def test_every_category_has_a_positive() -> None:
    assert {p[0] for p in POSITIVES} == secrets.SECRET_CATEGORY_NAMES


PNG = base64.b64encode(bytes(random.Random(40).randrange(256) for _ in range(600))).decode()
SMALL = base64.b64encode(bytes(random.Random(41).randrange(256) for _ in range(120))).decode()

NEGATIVES = [
    "request_id=123e4567-e89b-12d3-a456-426614174000 failed; trace: 550e8400-e29b-41d4-a716-446655440000",
    "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 broke main; git_sha=a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "digest: sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    f'{{"type": "image_url", "image_url": {{"url": "data:image/png;base64,{PNG}"}}}}',
    f"![chart](data:image/png;base64,{SMALL})",
    f'{{"data": "{SMALL}"}}',
    f"integrity: sha512-{_r(B64, 86, 42)}==",
    "OPENAI_API_KEY=sk-... and api_key='YOUR_API_KEY' and password: ${DB_PASSWORD} and token=<token>",
    "curl -H 'Authorization: Bearer $TOKEN' -H 'Authorization: Bearer YOUR_TOKEN_HERE'",
    'password = request.form["password"]; token = get_token(); api_key = os.environ["OPENAI_API_KEY"]',
    "password = user_input  # never log it",
    "password = getpass\nconnect(host=h, password=db_password)",
    "def __init__(self, credentials: GoogleCredentials | None, password: SecretStr) -> None:",
    "# mirrors https://github.com/nodejs/node/blob/4e7c07dfe2b253393702545c0ffe2712b21fd3dd/lib/internal/errors.js#L976",
    "auth_header: AuthorizationHeaderValueWithoutDigits",
    "fsspec.open('github://org:repo@/precip/file.csv')",
    "Author: Facebook\nAuthor-email: python-tornado@googlegroups.com\nLicense: Apache",
    'fin = open("s3://aws_access_key_id:aws_secret_access_key@bucket/key")',
    "max_tokens: 4096, model: gpt-4o-mini-2024-07-18, temperature=0.7, build=20240315, ts=1717171717",
    "order=1234567812345678 and invoice_number=9876543210",
    '{"usage": {"input_tokens": 12345678901234567, "output_tokens": 98765432109876543}}',
    "const token = localStorage.getItem('token'); headers = {'Authorization': 'Bearer ' + token}",
    "env: ${{ secrets.GITHUB_TOKEN }}, DATABASE_URL=postgres://user:password@localhost:5432/db",
    'fetch("https://api.example.com/v1/items?page=2&sort=created_at")',
    "The author: JaneDoeWritesBooks1984 wrote it; bypass: compass",
    "Use a key like AKIA-EXAMPLE and ghp_short in the docs.",
    f'{{"id": "chatcmpl-{_r(ALNUM, 29, 43)}", "object": "chat.completion"}}',
    "A JWT looks like eyJhbGciOi.eyJzdWIiOi.signature but this one is not valid base64 JSON.",
    "See -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE----- (a certificate, not a key)",
    "What does a file that starts with -----BEGIN RSA PRIVATE KEY----- contain? Explain the format.\nThanks",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_lookalikes_are_not_secrets(det, text) -> None:
    assert _found(det, text) == {}


def test_spans_redact_whole_secrets_across_parts(det) -> None:
    key = "sk-ant-api03-" + _r(URLSAFE, 93, 50) + "AA"
    parts = (
        TextPart(path=("system",), text="You are a coding assistant."),
        TextPart(path=("messages", 0, "content"), text=f"export ANTHROPIC_API_KEY={key}\nthen run it"),
    )
    req = ScreenRequest(prompt=Prompt(format="anthropic.messages", parts=parts), deadline=time.monotonic() + 5)
    result = det.detect(req)
    assert [(s.category, req.prompt.text[s.start : s.end]) for s in result.spans] == [("ANTHROPIC_API_KEY", key)]


def test_category_selection_and_errors() -> None:
    only = SecretsDetector(categories=["PRIVATE_KEY"])
    assert _found(only, f"{RSA}\nAKIA{_r(string.ascii_uppercase, 16, 60)}") == {"PRIVATE_KEY": {RSA}}
    with pytest.raises(ValueError, match="unknown secret categories"):
        SecretsDetector(categories=["AWS_KEY"])


def test_expired_deadline_gives_up(det) -> None:
    req = ScreenRequest(prompt=_request("x").prompt, deadline=time.monotonic() - 1)
    with pytest.raises(TimeoutError):
        det.detect(req)


def test_large_code_like_prompt(det) -> None:
    """1 MB of code-like text with many '//', ':' and '=' (the shapes that make the
    npm and key=value patterns backtrack) still finds the one key at the end."""
    line = "// comment: x = y + 1; url = https://example.com/a/b?c=d // more\n"
    text = line * (1_000_000 // len(line)) + "AKIA" + _r(string.ascii_uppercase, 16, 61)
    assert set(_found(det, text)) == {"AWS_ACCESS_KEY"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_any_text_gives_well_formed_results(det, text) -> None:
    result = det.detect(_request(text))
    assert result.fields["cf.llm.prompt.secret_categories"] == sorted({s.category for s in result.spans})
    for s in result.spans:
        assert 0 <= s.start < s.end <= len(text) and s.category in secrets.SECRET_CATEGORY_NAMES
