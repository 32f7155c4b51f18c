"""Pull code and JSON out of model answers written the way local models write them.

Local models wrap answers in prose, use ``c``/``C``/``cpp`` or bare fences, emit
``<think>`` blocks inline, forget to close the last fence when they run out of tokens,
or skip fences entirely. Each case is handled here, and "no code at all" is a value
(``None`` with a reason), never an exception: it becomes a failed attempt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_THINK = re.compile(r"<think>.*?(</think>|\Z)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "c", "h", "cpp", "c++", "cc", "cxx"}


@dataclass(frozen=True)
class Extraction:
    """The code found in an answer, or why none was usable."""

    code: str | None
    status: str  # ok | no_code | truncated
    reason: str
    method: str  # fenced | unfenced | none


def strip_reasoning(text: str) -> str:
    """Drop inline ``<think>…</think>`` reasoning (an unclosed one runs to the end)."""
    return _THINK.sub("", text)


def _balanced(code: str) -> bool:
    depth = 0
    for ch in re.sub(
        r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|/\*.*?\*/|//[^\n]*', "", code, flags=re.S
    ):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
    return depth == 0


def extract_code(text: str, function: str, finish_reason: str | None = None) -> Extraction:
    """Return the C source in ``text`` that defines ``function``.

    Preference: the last fenced block that mentions the function (models often show a
    snippet first and the full file last), then the largest fenced code block, then an
    unfenced answer starting at the first ``#include`` or the function's definition.
    Code with unbalanced braces, or cut by the token limit, is ``truncated``.
    """
    body = strip_reasoning(text)
    blocks = [
        (lang.lower(), code)
        for lang, code in _FENCE.findall(body)
        if lang.lower() in _CODE_LANGS and code.strip()
    ]
    code: str | None = None
    method = "none"
    with_fn = [c for _, c in blocks if re.search(rf"\b{re.escape(function)}\s*\(", c)]
    if with_fn:
        code, method = with_fn[-1], "fenced"
    elif blocks:
        code, method = max((c for _, c in blocks), key=len), "fenced"
    else:
        match = re.search(rf"(#include|\bvoid\s+{re.escape(function)}\s*\()", body)
        if match:
            code, method = body[match.start() :], "unfenced"
    if code is None or not code.strip():
        return Extraction(None, "no_code", "the answer contains no C code", "none")
    code = code.strip() + "\n"
    if not re.search(rf"\b{re.escape(function)}\s*\(", code):
        return Extraction(
            code, "no_code", f"the code in the answer does not define {function}()", method
        )
    if finish_reason == "length" or not _balanced(code):
        why = "the answer hit the token limit" if finish_reason == "length" else "unbalanced braces"
        return Extraction(code, "truncated", f"the code is truncated ({why})", method)
    return Extraction(code, "ok", "", method)


def extract_json(text: str) -> object:
    """Parse the JSON object in an answer, leniently, the way local models write it.

    Tried in order: each ```json or bare fenced block, the whole answer, then every
    ``{`` in the answer until one starts an object that parses (prose before and after
    is ignored). Raw control characters inside strings (newlines and tabs models put in
    descriptions) are accepted. The caller validates the object against its schema.
    Raises ``ValueError`` with a short reason; the PM agent turns that into a re-ask.
    """
    body = strip_reasoning(text)
    decoder = json.JSONDecoder(strict=False)  # strict=False: control characters in strings
    candidates = [c for lang, c in _FENCE.findall(body) if lang.lower() in {"json", ""}]
    candidates.append(body)
    last_error = "no JSON object found in the answer"
    for candidate in candidates:
        start = candidate.find("{")
        for _ in range(200):  # bounded: a garbage answer full of braces stays cheap
            if start == -1:
                break
            try:
                value, _ = decoder.raw_decode(candidate, start)
                return value
            except json.JSONDecodeError as exc:
                if last_error.startswith("no JSON"):
                    last_error = f"invalid JSON: {exc}"
            start = candidate.find("{", start + 1)
    raise ValueError(last_error)
