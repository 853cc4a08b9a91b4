"""FEEL text → tokens.

FEEL names may contain spaces and punctuation (``Applicant Age``, ``Approved/Declined``), so the lexer
cannot know where a name ends without the names in scope: it takes the longest known name that starts
at the cursor, and otherwise reads a plain identifier. Multi-word built-in functions (``date and time``,
``string length``) are recognised only when an opening parenthesis follows, so ``a and time`` stays an
``and``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from engine.errors import FeelError

NAME, NUMBER, STRING, OP, TEMPORAL, END = "name", "number", "string", "op", "temporal", "end"

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "if",
        "then",
        "else",
        "in",
        "between",
        "true",
        "false",
        "null",
        "for",
        "return",
        "some",
        "every",
        "satisfies",
        "instance",
        "of",
        "function",
    }
)

MULTI_WORD_FUNCTIONS = (
    "years and months duration",
    "days and time duration",
    "date and time",
    "string length",
    "upper case",
    "lower case",
    "starts with",
    "ends with",
    "substring before",
    "substring after",
    "round half up",
    "round half down",
    "round up",
    "round down",
    "list contains",
    "index of",
    "distinct values",
    "get value",
    "is defined",
)

_OPS = ("**", "..", "<=", ">=", "!=", "=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", "{", "}", ",", ".", ":")
_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_IDENT = re.compile(r"[^\W\d]\w*|\?")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "'": "'"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int


@lru_cache(maxsize=256)
def _name_pattern(names: frozenset[str]) -> re.Pattern[str]:
    """One anchored alternation of the names a plain identifier cannot cover, longest first.

    Cached because every cell of a table is compiled against the same name set.
    """
    parts = [re.escape(n) + r"(?!\w)" for n in sorted(names, key=len, reverse=True)]
    parts += [re.escape(f) + r"(?=\s*\()" for f in MULTI_WORD_FUNCTIONS]
    return re.compile("|".join(parts))


def complex_names(names: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[str]:
    """The subset of names that are not plain identifiers (they contain spaces or punctuation)."""
    return frozenset(n for n in names if n and not _IDENT.fullmatch(n))


def tokenize(text: str, names: frozenset[str] = frozenset()) -> list[Token]:
    """Split ``text``; ``names`` are the complex names (see :func:`complex_names`) to recognise whole."""
    pattern = _name_pattern(names)
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        m = _SPACE.match(text, i)
        if m:
            i = m.end()
            continue
        c = text[i]
        if c == '"':
            start = i
            s, i = _string(text, i)
            out.append(Token(STRING, s, start))
            continue
        if c == "@" and text.startswith('"', i + 1):
            start = i
            s, i = _string(text, i + 1)
            out.append(Token(TEMPORAL, s, start))
            continue
        m = _NUMBER.match(text, i)
        if m:
            out.append(Token(NUMBER, m.group(), i))
            i = m.end()
            continue
        m = pattern.match(text, i)
        if m and m.end() > i:
            out.append(Token(NAME, m.group(), i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            out.append(Token(NAME, m.group(), i))
            i = m.end()
            continue
        for op in _OPS:
            if text.startswith(op, i):
                out.append(Token(OP, op, i))
                i += len(op)
                break
        else:
            raise FeelError(f"unexpected character {c!r} at position {i}", source=text, position=i)
    out.append(Token(END, "", n))
    return out


def _string(text: str, i: int) -> tuple[str, int]:
    """Read the string literal whose opening quote is at ``i``; return its value and the index after it."""
    chars: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == '"':
            return "".join(chars), j + 1
        if c == "\\" and j + 1 < len(text):
            nxt = text[j + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[j + 2 : j + 6]):
                chars.append(chr(int(text[j + 2 : j + 6], 16)))
                j += 6
                continue
            chars.append(_ESCAPES.get(nxt, "\\" + nxt))
            j += 2
            continue
        chars.append(c)
        j += 1
    raise FeelError(f"unterminated string starting at position {i}", source=text, position=i)
