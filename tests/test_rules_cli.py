"""``llmwall rules check`` and ``llmwall rules eval``: output, positions and exit codes."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmwall.cli.rules import register_cli

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="llmwall")
    register_cli(parser.add_subparsers(dest="command", required=True))
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_check_default_rules(capsys) -> None:
    code, out, err = run(["rules", "check", str(ROOT / "rules.yaml")], capsys)
    assert code == 0, err
    assert "OK, 6 rules (5 enabled)" in out
    assert "cf.llm.prompt.unsafe_topic_detected" in out


def test_check_reports_every_error_with_position(tmp_path, capsys) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        "rules:\n  - id: a\n    expression: cf.llm.prompt.pii_detectd\n    action: log\n"
        '  - id: b\n    expression: cf.llm.prompt.injection_score lt "20"\n    action: drop\n',
    )
    code, out, err = run(["rules", "check", path], capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert (
        lines[0]
        == f"{path}:3:17: rule 'a': unknown field 'cf.llm.prompt.pii_detectd'; did you mean cf.llm.prompt.pii_detected?"
    )
    assert lines[1].startswith(f"{path}:6:50: rule 'b': cannot compare Int")
    assert lines[2].startswith(f"{path}:7:13: rule 'b': unknown action 'drop'")
    assert lines[3] == "3 errors"


def test_check_missing_file(tmp_path, capsys) -> None:
    code, _, err = run(["rules", "check", str(tmp_path / "nope.yaml")], capsys)
    assert code == 1 and "cannot read the rules file" in err


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"matched": [], "action": None, "rule": None}),
        ({"cf.llm.prompt.pii_detected": True}, {"matched": ["log-pii"], "action": "log", "rule": "log-pii"}),
        (
            {"llm.prompt.unsafe_topic_categories": ["S10"], "cf.llm.prompt.unsafe_topic_detected": True},
            {
                "matched": ["block-unsafe-categories", "log-hate-and-sexual-content", "log-unsafe-prompts"],
                "action": "block",
                "rule": "block-unsafe-categories",
            },
        ),
        (
            {"cf.llm.prompt.injection_score": 5, "ip.src": "10.1.2.3"},
            {"matched": ["log-prompt-injection"], "action": "log", "rule": "log-prompt-injection"},
        ),
        ({"cf.llm.prompt.injection_score": None}, {"matched": [], "action": None, "rule": None}),  # null = missing
    ],
)
def test_eval_prints_one_json_object(tmp_path, capsys, fields, expected) -> None:
    path = write(tmp_path, "fields.json", json.dumps(fields))
    code, out, err = run(["rules", "eval", str(ROOT / "rules.yaml"), "--fields", path], capsys)
    assert code == 0, err
    assert json.loads(out) == expected
    assert len(out.strip().splitlines()) == 1


def test_eval_reads_stdin(capsys, monkeypatch) -> None:
    code, out, _ = run(
        ["rules", "eval", str(ROOT / "rules.yaml"), "--fields", "-"],
        capsys,
        stdin='{"cf.llm.prompt.unsafe_topic_detected": true, "cf.llm.prompt.unsafe_topic_categories": ["S10"]}',
        monkeypatch=monkeypatch,
    )
    assert code == 0 and json.loads(out)["action"] == "block"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"cf.llm.prompt.pii_detectd": true}', "unknown field 'cf.llm.prompt.pii_detectd'"),
        ('{"cf.llm.prompt.pii_detected": "yes"}', 'field cf.llm.prompt.pii_detected must be Bool, got "yes"'),
        ('{"cf.llm.prompt.injection_score": 1.5}', "must be Int, got 1.5"),
        ('{"cf.llm.prompt.pii_categories": "EMAIL"}', "must be Array<String>"),
        ('{"ip.src": "not-an-ip"}', "must be IP"),
        ('{"cf.llm.prompt.pii_detected": true, "llm.prompt.pii_detected": false}', "given twice"),
        ("[1, 2]", "must be an object keyed by field name"),
        ("{not json", "cannot read the fields JSON"),
    ],
)
def test_eval_rejects_bad_fields(tmp_path, capsys, content, message) -> None:
    path = write(tmp_path, "fields.json", content)
    code, out, err = run(["rules", "eval", str(ROOT / "rules.yaml"), "--fields", path], capsys)
    assert code == 2 and out == ""
    assert message in err


def test_eval_with_broken_rules_exits_1(tmp_path, capsys) -> None:
    rules = write(tmp_path, "r.yaml", "rules:\n  - id: a\n")
    fields = write(tmp_path, "f.json", "{}")
    code, _, err = run(["rules", "eval", rules, "--fields", fields], capsys)
    assert code == 1 and "missing required key 'expression'" in err


# --- through the installed console script, as a user runs it -------------------------------------

LLMWALL = str(Path(sys.executable).with_name("llmwall"))


def llmwall(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LLMWALL, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_console_script_check_ok_and_errors(tmp_path) -> None:
    ok = llmwall("rules", "check", "rules.yaml")
    assert ok.returncode == 0, ok.stderr
    assert "OK, 6 rules" in ok.stdout
    bad = write(
        tmp_path, "bad.yaml", "rules:\n  - id: x\n    expression: any(cf.llm.prompt.pii_categories)\n    action: log\n"
    )
    res = llmwall("rules", "check", bad)
    assert res.returncode == 1
    assert f"{bad}:3:17: rule 'x': any() needs Array<Bool>, got Array<String>" in res.stderr


def test_console_script_eval_matches_documented_example() -> None:
    res = llmwall(
        "rules",
        "eval",
        "rules.yaml",
        "--fields",
        "-",
        stdin='{"llm.prompt.unsafe_topic_categories": ["S10"], "cf.llm.prompt.unsafe_topic_detected": true}',
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (
        '{"matched": ["block-unsafe-categories", "log-hate-and-sexual-content", "log-unsafe-prompts"], '
        '"action": "block", "rule": "block-unsafe-categories"}'
    )
    assert res.stdout.strip() in (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")


def test_console_script_eval_rejects_unknown_field() -> None:
    res = llmwall("rules", "eval", "rules.yaml", "--fields", "-", stdin='{"cf.llm.prompt.nope": 1}')
    assert res.returncode == 2 and "unknown field 'cf.llm.prompt.nope'" in res.stderr


def test_check_refuses_a_category_value_that_never_matches(tmp_path, capsys) -> None:
    path = write(
        tmp_path,
        "w.yaml",
        'rules:\n  - id: a\n    expression: any(cf.llm.prompt.unsafe_topic_categories[*] in {"S01"})\n'
        "    action: log\n",
    )
    code, out, err = run(["rules", "check", path], capsys)
    assert code == 1 and "OK" not in out
    assert err.startswith(
        f"{path}:3:66: rule 'a': 'S01' is not an unsafe-topic category, so it never matches "
        "cf.llm.prompt.unsafe_topic_categories; did you mean 'S1' (Violent Crimes)? known: S1 Violent Crimes, "
    )
    assert err.rstrip().endswith("1 error")


RESPONSE_RULES = """\
rules:
  - id: block-pii-prompts
    expression: cf.llm.prompt.pii_detected
    action: block
  - id: redact-pii-answers
    expression: cf.llm.response.pii_detected and http.host eq "api.openai.com"
    action: redact
  - id: not-a-response
    expression: not cf.llm.response.secret_detected
    action: log
"""


def test_check_names_each_rules_phase(tmp_path, capsys) -> None:
    code, out, err = run(["rules", "check", write(tmp_path, "r.yaml", RESPONSE_RULES)], capsys)
    assert code == 0, err
    assert "  block-pii-prompts: block, request phase" in out
    assert "  redact-pii-answers: redact, response phase" in out
    assert "  not-a-response: log, response phase" in out


def test_response_rules_never_match_in_the_request_phase(tmp_path, capsys) -> None:
    fields = write(tmp_path, "f.json", json.dumps({"http.host": "api.openai.com", "cf.llm.prompt.pii_detected": False}))
    code, out, _ = run(["rules", "eval", write(tmp_path, "r.yaml", RESPONSE_RULES), "--fields", fields], capsys)
    result = json.loads(out)
    # request phase: the negated response field is not evaluated there
    assert code == 0 and result["matched"] == [] and result["action"] is None
    assert result["response"] == {"matched": ["not-a-response"], "action": "log", "rule": "not-a-response"}
    fields = write(
        tmp_path,
        "g.json",
        json.dumps(
            {
                "http.host": "api.openai.com",
                "cf.llm.response.pii_detected": True,
                "cf.llm.response.secret_detected": True,
            }
        ),
    )
    _, out, _ = run(["rules", "eval", str(tmp_path / "r.yaml"), "--fields", fields], capsys)
    assert json.loads(out)["response"]["action"] == "redact"
