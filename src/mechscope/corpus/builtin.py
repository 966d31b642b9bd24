"""The built-in English corpus: Debian's Python documentation plus the system's GNU manuals.

Debian's ``python3.X-doc`` package (``apt-get install python3-doc``) ships the reStructuredText
sources of the Python documentation (``/usr/share/doc/python3.X/html/_sources/**/*.rst.txt``, about
500 files, 11 MB; 2.0 million SmolLM2 tokens after cleaning). The text is under the Python Software
Foundation License Version 2 (code examples under the Zero-Clause BSD licence); see
``/usr/share/doc/python3.X/copyright``. The GNU Info manuals that Debian's base system installs in
``/usr/share/info`` (coreutils, grep, sed, findutils, diffutils, gzip, gettext, gnupg, wget...;
GNU Free Documentation License) add about 1.1 million tokens, one document per manual.

Cleaning keeps prose and drops markup: section adornments, comments and link targets, directives
whose body is not prose (code-block directives, tables, indexes, toctrees...) and
grid tables; literal blocks (after ``::``) and interactive ``>>>`` sessions are kept verbatim as
code paragraphs (documentation text mixes prose and code, as web text does); inline roles (``:func:`len```), literals and
emphasis become their text, and hard-wrapped paragraphs are joined. Each source file is one document.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

from mechscope.corpus.sources import Corpus
from mechscope.errors import MechscopeError

__all__ = ["builtin_corpus", "clean_rst", "find_python_docs"]

DOC_ROOTS = ("/usr/share/doc",)
INFO_ROOT = "/usr/share/info"
INSTALL_HINT = (
    "the built-in corpus is the Python documentation from Debian's python3-doc package: "
    "apt-get install python3-doc (or pass your own text file with --corpus FILE)"
)
# directives whose indented body is code, data or navigation rather than prose
DROP_DIRECTIVES = {
    "code-block", "sourcecode", "code", "literalinclude", "highlight", "index", "toctree",
    "productionlist", "testcode", "testoutput", "testsetup", "testcleanup", "doctest", "table",
    "csv-table", "list-table", "image", "figure", "raw", "only", "include", "module",
    "currentmodule", "sectionauthor", "moduleauthor", "tabularcolumns", "audit-event",
    "availability", "c:macro", "opcode", "cmdoption", "option", "envvar", "grammar-snippet",
}  # fmt: skip
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::(.*)$")
_EXPLICIT = re.compile(r"^(\s*)\.\.(\s|$)")  # comments, targets, substitutions, footnotes
_ADORNMENT = re.compile(r"^\s*([=\-~^*#\"'`+:.])\1{2,}\s*$")
_TABLE = re.compile(r"^\s*(\+[-=+]+\+?|\|.*\||[=\- ]{3,})\s*$")
_ROLE = re.compile(r":[\w:.-]+:`([^`]*)`")
_LINK = re.compile(r"`([^`<]*?)\s*<[^>]*>`_{1,2}")
_LITERAL = re.compile(r"``([^`]*)``")
_REF = re.compile(r"`([^`]+)`_{0,2}")
_EMPH = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
_BULLET = re.compile(r"^\s*([*+-]|#\.|\d+\.)\s+\S")
_SUBST = re.compile(r"\|([\w -]+)\|_?")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _inline(text: str) -> str:
    def role(m: re.Match[str]) -> str:
        body = m.group(1)
        if m.group(0).startswith((":pep:", ":rfc:")):  # :pep:`8` reads "PEP 8"
            return f"{m.group(0)[1:4].upper()} {body.split('#')[0]}"
        if "<" in body and body.endswith(">"):
            body = body[: body.index("<")].strip()
        return body.lstrip("~!")

    text = _ROLE.sub(role, text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    return _SUBST.sub(r"\1", text)


def _verbatim(block: list[str]) -> str:
    """A code block dedented, without surrounding blank lines."""
    return textwrap.dedent("\n".join(block)).strip("\n")


def _drop_block(lines: list[str], start: int, indent: int) -> int:
    """Index of the first line after the block that is indented more than ``indent``."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
        i += 1
    return i


def clean_rst(source: str) -> str:
    """Prose paragraphs of a reStructuredText source, separated by blank lines."""
    lines = source.splitlines()
    paragraphs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            text = _inline(" ".join(s.strip() for s in current)).strip()
            if len(text) > 1:
                paragraphs.append(text)
            current.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            flush()
            name, indent = directive.group(2), _indent(line)
            i += 1
            if name in DROP_DIRECTIVES:
                i = _drop_block(lines, i, indent)
            else:  # prose body (note, seealso, function descriptions...): skip its options only
                while i < len(lines) and lines[i].strip().startswith(":"):
                    i += 1
            continue
        if _EXPLICIT.match(line):
            flush()
            i = _drop_block(lines, i + 1, _indent(line))
            continue
        stripped = line.strip()
        if not stripped or _ADORNMENT.match(line) or _TABLE.match(line):
            flush()
            i += 1
            continue
        if stripped.startswith(">>>"):  # a doctest block runs to the next blank line
            flush()
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            paragraphs.append(_verbatim(lines[i:end]))
            i = end
            continue
        if stripped.endswith("::"):  # a literal block (code) follows, kept verbatim
            kept = stripped[:-2].rstrip()
            if kept:
                current.append(kept + ":")
            flush()
            end = _drop_block(lines, i + 1, _indent(line))
            if code := _verbatim(lines[i + 1 : end]):
                paragraphs.append(code)
            i = end
            continue
        if _BULLET.match(line):  # a list item starts a paragraph of its own
            flush()
        current.append(line)
        i += 1
    flush()
    return "\n\n".join(paragraphs)


_INFO_NOISE = re.compile(
    r"^(File: .*Node: |\* Menu:|\* [^:]+::|Tag Table:|End Tag Table|Indirect:)"
)


def clean_info(source: str) -> str:
    """Text of a GNU Info manual without node headers, menus and tag tables."""
    kept = []
    for node in source.split("\x1f"):
        if node.lstrip().startswith(("Tag Table", "End Tag Table", "Indirect:", "Local Variables")):
            continue
        lines = [line for line in node.splitlines() if not _INFO_NOISE.match(line)]
        if text := "\n".join(lines).strip():
            kept.append(text)
    return re.sub(r"\n{3,}", "\n\n", "\n\n".join(kept))


def _gunzip(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def find_info_manuals() -> dict[str, list[Path]]:
    """GNU Info manuals installed by the base system (coreutils, grep, sed...), by manual name.

    The Python manual is left out: it repeats the Python documentation.
    """
    manuals: dict[str, list[Path]] = {}
    for path in sorted(Path(INFO_ROOT).glob("*.info*.gz")):
        name = path.name.split(".info")[0]
        if not name.startswith("python"):
            manuals.setdefault(name, []).append(path)
    return manuals


def find_python_docs() -> Path | None:
    """The newest ``python3.X`` documentation source folder Debian installed, if any."""
    found = []
    for root in DOC_ROOTS:
        for path in Path(root).glob("python3*/html/_sources"):
            match = re.fullmatch(r"python3\.(\d+)", path.parent.parent.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    override = os.environ.get("MECHSCOPE_PYTHON_DOCS")
    if override:
        return Path(override)
    return max(found)[1] if found else None


def builtin_corpus() -> Corpus:
    """The Python documentation as a corpus (one document per source file, sorted by path)."""
    root = find_python_docs()
    if root is None or not root.is_dir():
        raise MechscopeError(INSTALL_HINT)
    files = sorted(root.rglob("*.rst.txt"))
    if not files:
        raise MechscopeError(f"no .rst.txt files in {root}; {INSTALL_HINT}")
    manuals = find_info_manuals()
    every = [*files, *(p for parts in manuals.values() for p in parts)]
    stamp = f"{root}|{len(every)}|{sum(p.stat().st_size for p in every)}|clean-v3"

    def documents() -> Iterator[str]:
        for path in files:
            yield clean_rst(path.read_text(encoding="utf-8", errors="replace"))
        for parts in manuals.values():
            yield clean_info("".join(_gunzip(p) for p in parts))

    return Corpus(
        "python-docs",
        documents,
        fingerprint=hashlib.sha256(stamp.encode()).hexdigest()[:16],
        origin=f"Debian python3-doc ({root}) and GNU Info manuals ({INFO_ROOT}: "
        + ", ".join(manuals)
        + ")",
        licence="Python docs: PSF License Version 2 (examples: Zero-Clause BSD); "
        "GNU manuals: GNU Free Documentation License",
        cache_tokens=True,
    )
