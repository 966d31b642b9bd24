"""Token classes that both the ``tokens`` explainer and the lexical judge understand.

The ``tokens`` explainer names a class when most of a feature's activating tokens belong to it
("digits", "capitalised words", "closing brackets", "Python keywords"...); the lexical judge reads
those names (and quoted tokens) back out of any explanation and predicts a token active when it
belongs to a named class or equals a quoted token. Each class is a predicate on the token's text
with its surrounding whitespace removed.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable

__all__ = ["CLASSES", "classes_in", "quoted_in", "token_class"]


def _is_capitalised(t: str) -> bool:
    return len(t) > 1 and t[0].isupper() and t[1:].islower() and t.isalpha()


CLASSES: dict[str, Callable[[str], bool]] = {
    "digits": lambda t: bool(t) and t.isdigit(),
    "capitalised words": _is_capitalised,
    "upper-case words": lambda t: len(t) > 1 and t.isalpha() and t.isupper(),
    "closing brackets": lambda t: bool(t) and all(c in ")]}" for c in t),
    "opening brackets": lambda t: bool(t) and all(c in "([{" for c in t),
    "Python keywords": lambda t: keyword.iskeyword(t),
    "punctuation": lambda t: bool(t) and all(not c.isalnum() and not c.isspace() for c in t),
    "line breaks": lambda t: t == "",  # stripped: a token made only of whitespace
}
# spellings that name a class in free text (an LLM's explanation, a user's)
_ALIASES = {
    "digits": r"\bdigits?\b|\bnumbers?\b|\bnumerals?\b|\bnumeric\b",
    "capitalised words": r"\bcapitali[sz]ed\b|\bcapital letters?\b|\bproper nouns?\b",
    "upper-case words": r"\bupper-?case\b|\ball caps\b|\bacronyms?\b",
    "closing brackets": r"\bclosing (?:brackets?|parenthes[ie]s|braces?)\b",
    "opening brackets": r"\bopening (?:brackets?|parenthes[ie]s|braces?)\b",
    "Python keywords": r"\bpython keywords?\b|\bkeywords?\b",
    "punctuation": r"\bpunctuation\b",
    "line breaks": r"\bline ?breaks?\b|\bnewlines?\b|\bwhitespace\b",
}
_CONTEXT = re.compile(r'\(often after "(?:[^"\\]|\\.)*"\)')  # the tokens explainer's context note
_QUOTED = re.compile(r"\"([^\"]{1,40})\"|'([^']{1,40})'|“([^”]{1,40})”")


def token_class(token: str) -> str | None:
    """The first class the token belongs to, or ``None``."""
    stripped = token.strip()
    for name, test in CLASSES.items():
        if test(stripped):
            return name
    return None


def classes_in(explanation: str) -> list[str]:
    """The classes an explanation names (case-insensitive, with common spellings)."""
    low = explanation.lower()
    return [name for name, pattern in _ALIASES.items() if re.search(pattern, low)]


def quoted_in(explanation: str) -> set[str]:
    """The quoted strings of an explanation, whitespace stripped (``"the"`` -> ``the``), leaving
    out the ``(often after "x")`` context note."""
    found = set()
    for match in _QUOTED.finditer(_CONTEXT.sub("", explanation)):
        value = next(g for g in match.groups() if g is not None).strip()
        if value:
            found.add(value)
    return found


def predicate(explanation: str) -> Callable[[str], bool]:
    """A token predicate read from an explanation: in a named class or equal to a quoted token.

    Quoted tokens that are only examples of a named class add nothing; a class named without
    examples still matches its whole class.
    """
    names = classes_in(explanation)
    quoted = quoted_in(explanation)
    tests = [CLASSES[n] for n in names]

    def matches(token: str) -> bool:
        stripped = token.strip()
        return stripped in quoted or any(test(stripped) for test in tests)

    return matches
