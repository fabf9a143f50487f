"""Llama Guard 3 served elsewhere: any OpenAI-compatible ``/v1/completions`` endpoint.

For scale-out: vLLM, TGI, the llama.cpp server and Ollama all serve Llama Guard behind a
completions endpoint. We send the same prompt the local runtime builds (raw text, special
tokens included, plus the ``"\\n\\n"`` the model writes first, so the first generated token is
the verdict), ``temperature`` 0 and a few ``logprobs``; P(unsafe) comes from the verdict
token's log-probabilities when the server returns them, else from the text (0 or 1).

A model's answer (``ScreenRequest.reply_to`` set) is sent in the agent-side form of the
same template: the conversation ``User: <latest user turn>`` then ``Agent: <answer>``, judged
for the Agent's message (``llama_guard_prompt``, which also bounds the user turn).

The leading ``<|begin_of_text|>`` is left out by default because these servers add BOS
themselves when they tokenise a completion prompt; ``send_bos=True`` restores it for one
that does not. Only the standard library is used; every wait is bounded by the request's
deadline, and a slow server means "not scored" (``NotScored``), never a blocked proxy.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from llmwall import fields
from llmwall.detectors import llama_guard_prompt as lgp
from llmwall.detectors.base import Detection, Detector, DetectorConfig, NotScored, ScreenRequest
from llmwall.detectors.llama_guard_prompt import relevance_score, top_probabilities
from llmwall.fields import CUSTOM_TOPIC_CATEGORIES, UNSAFE_TOPIC_CATEGORIES, UNSAFE_TOPIC_DETECTED

API_KEY_ENV = "LLMWALL_REMOTE_API_KEY"
_MAX_RESPONSE = 1 << 20


class RemoteError(RuntimeError):
    """The server answered, but not with something we can score (HTTP error, junk)."""


def _endpoint(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.endswith("/v1/completions"):
        return base
    return base + ("/completions" if base.endswith("/v1") else "/v1/completions")


def _verdict_distribution(choice: Mapping[str, Any]) -> tuple[dict[str, float] | None, int]:
    """Top log-probabilities at the first verdict token of an OpenAI completions ``logprobs`` block.

    Returns (stripped token -> probability, summed over variants such as " safe"), and the index
    of that token in the generated text; (None, -1) when the server sent no log-probabilities.
    """
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None, -1
    tokens, tops = lp.get("tokens") or [], lp.get("top_logprobs") or []
    for i, token in enumerate(tokens):
        if isinstance(token, str) and token.strip() in ("safe", "unsafe"):
            dist = top_probabilities(tops[i] if i < len(tops) and isinstance(tops[i], dict) else {})
            token_lp = (lp.get("token_logprobs") or [None] * len(tokens))[i]
            if isinstance(token_lp, (int, float)) and math.isfinite(token_lp):
                dist.setdefault(token.strip(), math.exp(token_lp))
            return dist, i
        if isinstance(token, str) and token.strip():
            break  # something else came first: no verdict distribution
    return None, -1


def p_unsafe_from(choice: Mapping[str, Any], verdict: lgp.Verdict) -> float:
    """P(unsafe) normalised over {safe, unsafe} when log-probs allow, else the verdict as 0/1."""
    dist, _ = _verdict_distribution(choice)
    if dist:
        pu, ps = dist.get("unsafe"), dist.get("safe")
        if pu is not None and ps is not None and pu + ps > 0:
            return pu / (pu + ps)
        if pu is not None:
            return min(1.0, pu)
        if ps is not None:
            return max(0.0, 1.0 - ps)
    return 1.0 if verdict.unsafe else 0.0


class RemoteLlamaGuard(Detector):
    """Llama Guard 3 over HTTP; same fields and scores as the local detector."""

    name = "llama_guard"
    provides = fields.UNSAFE_FIELDS | fields.CUSTOM_TOPIC_FIELDS
    reads_reply_to = True

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        threshold: float = 0.5,
        template: str | None = None,
        send_bos: bool = False,
        max_tokens: int = 10,
        top_logprobs: int = 5,
        api_key: str | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"remote Llama Guard URL must be http(s): {base_url!r}")
        self.url = _endpoint(base_url)
        self.model = model
        self.threshold = threshold
        if template is None:
            template = lgp.TEMPLATE_1B if model and "1b" in model.lower() else lgp.TEMPLATE_8B
        self.template = lgp.template_for(template)
        self.template_name = template
        self.send_bos = send_bos
        self.max_tokens = max_tokens
        self.top_logprobs = top_logprobs
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="llama-guard-remote")

    def describe(self) -> str:
        return f"llama_guard: remote {self.url} (model {self.model or 'server default'}, {self.template_name})"

    # -- HTTP ------------------------------------------------------------------------

    def _prompt(self, template: lgp.PromptTemplate, text: str, user_text: str, forced: str = "\n\n") -> str:
        prompt = template.full(text, user_text) + forced
        return prompt if self.send_bos else prompt[len(lgp.BOS) :]

    def _complete(self, prompt: str, deadline: float, max_tokens: int, logprobs: int) -> Mapping[str, Any]:
        """POST one completion; the first choice, or NotScored / RemoteError."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotScored("deadline passed before the remote call")
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "logprobs": logprobs,
            "stream": False,
        }
        if self.model:
            body["model"] = self.model
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=remaining) as resp:
                raw = resp.read(_MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            raise RemoteError(f"remote Llama Guard answered HTTP {exc.code}") from None
        except TimeoutError:
            raise NotScored("remote Llama Guard did not answer before the deadline") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise NotScored("remote Llama Guard did not answer before the deadline") from None
            raise RemoteError(f"remote Llama Guard unreachable: {exc.reason}") from None
        if time.monotonic() > deadline:
            raise NotScored("remote Llama Guard answered after the deadline")
        if len(raw) > _MAX_RESPONSE:
            raise RemoteError("remote Llama Guard response too large")
        try:
            choice = json.loads(raw)["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RemoteError("remote Llama Guard response is not an OpenAI completion") from None
        if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
            raise RemoteError("remote Llama Guard completion has no text")
        return choice

    # -- scoring ---------------------------------------------------------------------

    def _verdict(
        self, template: lgp.PromptTemplate, text: str, user_text: str, deadline: float
    ) -> tuple[float, tuple[str, ...]]:
        prompt = self._prompt(template, text, user_text)
        choice = self._complete(prompt, deadline, self.max_tokens, self.top_logprobs)
        verdict = lgp.parse_verdict(choice["text"], [c for c, _ in template.categories])
        if verdict.unsafe is None:
            raise RemoteError("remote Llama Guard answered neither 'safe' nor 'unsafe'")
        return p_unsafe_from(choice, verdict), verdict.categories

    def _custom(
        self, template: lgp.PromptTemplate, text: str, user_text: str, topics: Mapping[str, str], deadline: float
    ) -> dict[str, int]:
        """Same score as the local detector: P(unsafe) x P(code after ``unsafe\\nS``), mapped to 1-99."""
        cats, codes = lgp.custom_categories(topics)
        custom = replace(template, categories=cats)
        prompt = self._prompt(custom, text, user_text)
        first = self._pool.submit(self._complete, prompt, deadline, 1, self.top_logprobs)
        second = self._complete(self._prompt(custom, text, user_text, "\n\nunsafe\nS"), deadline, 1, 20)
        choice = first.result(timeout=max(0.0, deadline - time.monotonic()))
        verdict = lgp.parse_verdict(choice["text"])
        p = p_unsafe_from(choice, verdict) if verdict.unsafe is not None else 0.0
        top = ((second.get("logprobs") or {}).get("top_logprobs") or [{}])[0] or {}
        probs = top_probabilities(top)
        if not probs:  # no log-probs: the generated code is all we know
            probs = {second["text"].strip(): 1.0}
        return {label: relevance_score(p * probs.get(code[1:], 0.0)) for code, label in codes.items()}

    def detect(self, request: ScreenRequest) -> Detection:
        text = request.prompt.text
        if time.monotonic() >= request.deadline:
            raise NotScored("deadline already passed")
        if not text.strip():
            return Detection(
                fields={UNSAFE_TOPIC_DETECTED: False, UNSAFE_TOPIC_CATEGORIES: []},
                info={"p_unsafe": 0.0, "device": "remote"},
            )
        # An answer is judged as the Agent's turn after the user turn it answers; a prompt as the User's.
        template, user_text = self.template, ""
        if request.reply_to is not None:
            template, user_text = self.template.agent(), lgp.context_of(request.reply_to)
        custom = None
        if request.custom_topics and CUSTOM_TOPIC_CATEGORIES in request.wanted:
            custom = self._pool.submit(self._custom, template, text, user_text, request.custom_topics, request.deadline)
        p, cats = self._verdict(template, text, user_text, request.deadline)
        unsafe = p >= self.threshold
        out: dict[str, object] = {UNSAFE_TOPIC_DETECTED: unsafe, UNSAFE_TOPIC_CATEGORIES: list(cats) if unsafe else []}
        info: dict[str, object] = {"p_unsafe": round(p, 6), "device": "remote"}
        if custom is not None:
            try:
                out[CUSTOM_TOPIC_CATEGORIES] = custom.result(timeout=max(0.0, request.deadline - time.monotonic()))
            except (TimeoutError, RemoteError):  # the verdict stands; the custom field stays absent
                info["custom_topics_not_scored"] = True
        return Detection(fields=out, info=info)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create(config: DetectorConfig) -> Detector | None:
    """The remote Llama Guard detector when ``llmwall_remote_llama_guard`` is set, else None."""
    if not config.remote_llama_guard:
        return None
    return RemoteLlamaGuard(config.remote_llama_guard, model=config.remote_model, threshold=config.unsafe_threshold)
