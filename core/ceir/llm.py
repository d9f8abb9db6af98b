"""Optional concept generation by a language model behind an OpenAI-compatible chat API.

CEIR builds its concept bank by asking a language model, for every class, what features identify it,
what broader categories it belongs to and what is usually seen around it.  ConceptLens never needs
this (it ships banks in ``banks/``), but a user with a model server (a local vLLM / llama.cpp / Ollama,
or a hosted API) can generate a bank for their own classes.  Only the standard library is used, so
nothing extra is installed and nothing is contacted unless a user asks for it.

Settings come from the environment: ``CONCEPTLENS_LLM_URL`` (base URL, e.g. ``http://localhost:8000/v1``),
``CONCEPTLENS_LLM_MODEL`` and, optionally, ``CONCEPTLENS_LLM_KEY``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.ceir.bank_filters import filter_by_length
from core.ceir.concept_bank import MAX_CONCEPT_CHARS, ConceptBank, read_concept_file, write_concept_file

ENV_URL = "CONCEPTLENS_LLM_URL"
ENV_KEY = "CONCEPTLENS_LLM_KEY"
ENV_MODEL = "CONCEPTLENS_LLM_MODEL"

MAX_CONCEPT_WORDS = 6
_BODY_SNIPPET_CHARS = 200

SYSTEM_PROMPT = (
    "You help build a vocabulary of short visual concepts for describing photographs. "
    "Answer with a plain list: one item per line, each item at most five words, "
    "with no numbering, no explanations and no introduction."
)

# One question per kind of concept; ``{cls}`` is replaced by the class name.
PROMPTS: dict[str, str] = {
    "features": "List the most important visual features for recognizing something as a {cls} in a photo.",
    "superclasses": "List broader categories that a {cls} belongs to, from specific to general.",
    "around": "List the things most commonly seen around a {cls} or in the same picture as one.",
}


class LLMError(ValueError):
    """A language-model request that failed; the message says why in one sentence."""


@dataclass
class LLMSettings:
    """Where and how to reach an OpenAI-compatible chat-completions API."""

    url: str
    api_key: str | None
    model: str
    timeout: float = 30.0


def settings_from_env(environ: Mapping[str, str] | None = None) -> LLMSettings:
    """Settings from CONCEPTLENS_LLM_URL, _MODEL and _KEY in ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    url = env.get(ENV_URL, "").strip()
    model = env.get(ENV_MODEL, "").strip()
    key = env.get(ENV_KEY, "").strip() or None
    if not url or not model:
        raise ValueError(
            f"No language model is configured: set {ENV_URL} (base URL of an OpenAI-compatible API, e.g. "
            f"http://localhost:8000/v1) and {ENV_MODEL} (the model name), and {ENV_KEY} if the server "
            "needs a key."
        )
    if not re.match(r"https?://", url, re.IGNORECASE):
        raise ValueError(f"{ENV_URL}={url!r} must start with http:// or https://.")
    return LLMSettings(url=url, api_key=key, model=model)


# ---------------------------------------------------------------------------------------------
# Talking to the server
# ---------------------------------------------------------------------------------------------


def _endpoint(settings: LLMSettings) -> str:
    return settings.url.rstrip("/") + "/chat/completions"


def _is_timeout(error: BaseException | object) -> bool:
    return isinstance(error, TimeoutError)  # socket.timeout is an alias of TimeoutError


def _post_json(settings: LLMSettings, payload: dict) -> bytes:
    """POST ``payload`` to the chat endpoint and return the raw reply body, or raise ``LLMError``."""
    endpoint = _endpoint(settings)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    request = urllib.request.Request(
        endpoint, data=json.dumps(payload).encode("utf-8"), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        body = error.read().decode("utf-8", errors="replace") if error.fp is not None else ""
        snippet = " ".join(body.split())[:_BODY_SNIPPET_CHARS]
        raise LLMError(f"The language model at {endpoint} answered HTTP {error.code}: {snippet!r}.") from None
    except urllib.error.URLError as error:
        if _is_timeout(error.reason):
            raise LLMError(
                f"The language model at {endpoint} did not answer within {settings.timeout} s."
            ) from None
        if isinstance(error.reason, ConnectionRefusedError):
            raise LLMError(
                f"Connection refused by {endpoint}; is the language model server running?"
            ) from None
        raise LLMError(f"Could not reach the language model at {endpoint}: {error.reason}.") from None
    except OSError as error:  # timeouts while reading the body, resets, ...
        if _is_timeout(error):
            raise LLMError(
                f"The language model at {endpoint} did not answer within {settings.timeout} s."
            ) from None
        raise LLMError(f"The connection to the language model at {endpoint} failed: {error}.") from None


def _reply_content(body: bytes, endpoint: str) -> str:
    """``choices[0].message.content`` of a chat-completions reply, or ``LLMError``."""
    try:
        reply = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        snippet = " ".join(body.decode("utf-8", errors="replace").split())[:_BODY_SNIPPET_CHARS]
        raise LLMError(
            f"The language model at {endpoint} answered with something that is not JSON: {snippet!r}."
        ) from None
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMError(
            f"The reply from {endpoint} has no choices[0].message.content; is it an OpenAI-compatible API?"
        ) from None
    if not isinstance(content, str):
        raise LLMError(f"The reply from {endpoint} has a choices[0].message.content that is not text.")
    return content


# ---------------------------------------------------------------------------------------------
# Turning a reply into concepts
# ---------------------------------------------------------------------------------------------

_LIST_MARKER = re.compile(
    r"^(?:[-*+\u2022\u2023\u25e6\u2013\u2014>]+|\(?\d{1,3}[.):]|\(?[a-z][.)](?=\s))\s*", re.I
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_TRAILING = ".,;:!?" + _QUOTES


def clean_concept_line(line: str) -> str | None:
    """One list line as a concept: bullets, numbering, markdown, quotes and trailing punctuation removed,
    lower-cased, whitespace collapsed.  None for headings ("Here are some features:"), empty or long lines.
    """
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in line)
    text = text.split("#", 1)[0].strip()
    if text.endswith(":"):
        return None
    text = text.replace("**", "").replace("__", "").strip()
    previous = None
    while previous != text:
        previous = text
        text = _LIST_MARKER.sub("", text).strip().strip(_QUOTES).strip()
    text = re.split(r":\s|\s[-\u2013\u2014]\s", text, maxsplit=1)[
        0
    ]  # "long ears: for hearing" -> "long ears"
    text = " ".join(text.rstrip(_TRAILING).strip(_QUOTES).split()).lower()
    if not text or len(text) > MAX_CONCEPT_CHARS or len(text.split()) > MAX_CONCEPT_WORDS:
        return None
    return text


def parse_concept_list(content: str) -> list[str]:
    """Concepts from a model's plain-list answer, in order, exact repeats removed."""
    concepts: list[str] = []
    for line in content.replace("\r", "\n").split("\n"):
        concept = clean_concept_line(line)
        if concept is not None and concept not in concepts:
            concepts.append(concept)
    return concepts


def ask_concepts(
    settings: LLMSettings, class_name: str, kinds: Sequence[str] = ("features", "superclasses", "around")
) -> dict[str, list[str]]:
    """Ask the model one question per kind about ``class_name``; returns kind -> concepts."""
    class_name = " ".join(str(class_name).split())
    if not class_name:
        raise ValueError("class_name must be a non-empty name.")
    unknown = [kind for kind in kinds if kind not in PROMPTS]
    if unknown:
        raise ValueError(f"Unknown concept kind {unknown[0]!r}; expected one of {', '.join(PROMPTS)}.")
    answers: dict[str, list[str]] = {}
    for kind in kinds:
        payload = {
            "model": settings.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": PROMPTS[kind].format(cls=class_name)},
            ],
            "temperature": 0,
        }
        content = _reply_content(_post_json(settings, payload), _endpoint(settings))
        answers[kind] = parse_concept_list(content)
    return answers


def _merge_concepts(
    answers: Sequence[dict[str, list[str]]], class_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """All concepts in first-seen order without case-insensitive repeats or class names; plus issue notes."""
    classes = {name.casefold() for name in class_names}
    merged: list[str] = []
    seen: set[str] = set()
    issues: list[str] = []
    for answer in answers:
        for concepts in answer.values():
            for concept in concepts:
                key = concept.casefold()
                if key in classes:
                    if key not in seen:
                        issues.append(f"'{concept}' is a class name, dropped")
                    seen.add(key)
                elif key not in seen:
                    seen.add(key)
                    merged.append(concept)
    return merged, issues


def generate_bank(
    settings: LLMSettings,
    class_names: Sequence[str],
    out_path: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ConceptBank:
    """Ask the model about every class, merge and filter the answers, and write the bank atomically.

    Nothing is written unless every request succeeds.  ``progress(done, total)`` is called after each
    class.  Returns the bank as read back from ``out_path``, with ``issues`` listing what was dropped.
    """
    names = [" ".join(str(name).split()) for name in class_names]
    if not names or not all(names):
        raise ValueError("class_names must be a non-empty list of non-empty names.")
    answers = []
    for done, name in enumerate(names, start=1):
        answers.append(ask_concepts(settings, name))
        if progress is not None:
            progress(done, len(names))
    merged, issues = _merge_concepts(answers, names)
    kept, removed = filter_by_length(merged, max_chars=MAX_CONCEPT_CHARS, max_words=MAX_CONCEPT_WORDS)
    issues += [f"'{concept}' {reason}, dropped" for concept, reason in removed.items()]
    if not kept:
        raise LLMError(
            f"The language model {settings.model!r} gave no usable concepts for {len(names)} classes."
        )
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    header = (
        f"ConceptLens concept bank generated by the language model {settings.model} on {today}\n"
        f"for {len(names)} classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}\n"
        "Review it before use: one concept per line, '#' starts a comment."
    )
    write_concept_file(out_path, kept, header=header)
    bank = read_concept_file(Path(out_path))
    bank.issues = issues + bank.issues
    return bank
